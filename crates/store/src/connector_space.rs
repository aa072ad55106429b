//! Connector spaces: the engine's copy of what each connector last saw.

use std::collections::HashMap;

use sqlx::Row;
use syncctl_core::{Anchor, Attributes, ContentHash, CsObject, Dn, Watermark};

use crate::error::{Result, StoreError};
use crate::reader::Param;
use crate::runs::RunCounts;
use crate::{ConnectorId, RunId, Store};

/// What the engine needs to diff one CS object without reading its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsIndexEntry {
    /// The stored content hash.
    pub hash: ContentHash,
    /// The stored DN (normalized), to tell renames from other updates.
    pub dn_norm: String,
    /// False for a tombstone.
    pub present: bool,
}

/// One CS object as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCsObject {
    /// The connector's name.
    pub connector: String,
    /// The anchor.
    pub anchor: String,
    /// The base64 ImmutableID, when the source has one.
    pub immutable_id: Option<String>,
    /// The DN as the source wrote it.
    pub dn: String,
    /// The object class.
    pub object_class: String,
    /// The attributes.
    pub attributes: Attributes,
    /// The content hash.
    pub content_hash: ContentHash,
    /// `present` or `deleted`.
    pub state: String,
    /// When it was first imported (ms).
    pub created_at: i64,
    /// When it last changed (ms).
    pub changed_at: i64,
    /// The global change sequence of its last change.
    pub change_seq: i64,
}

/// One change to a connector space.
#[derive(Clone, Debug)]
pub enum CsWrite {
    /// Insert or replace an object (add, update, rename, or the return of a tombstone).
    Upsert {
        /// The normalized object.
        object: CsObject,
        /// Its content hash.
        hash: ContentHash,
        /// Its attributes serialized (what the hash was computed over; see
        /// [`CsObject::hash_and_serialize`]).
        attributes_json: String,
    },
    /// Turn an object into a tombstone.
    Delete {
        /// Its anchor.
        anchor: Anchor,
    },
}

impl CsWrite {
    /// The anchor this write concerns (batches are sorted by it).
    pub fn anchor(&self) -> &str {
        match self {
            Self::Upsert { object, .. } => object.anchor.as_str(),
            Self::Delete { anchor } => anchor.as_str(),
        }
    }
}

/// How `syncctl show` looks an object up.
#[derive(Clone, Debug)]
pub enum CsLookup {
    /// By DN (compared normalized).
    Dn(Dn),
    /// By anchor.
    Anchor(String),
    /// By base64 ImmutableID.
    ImmutableId(String),
}

const SELECT_OBJECT: &str = "SELECT c.name AS connector, o.anchor, o.immutable_id, o.dn, o.object_class, o.attributes, \
     o.content_hash, o.state, o.created_at, o.changed_at, o.change_seq \
     FROM cs_objects o JOIN connectors c ON c.id = o.connector_id ";

fn hash_from(bytes: &[u8], anchor: &str) -> Result<ContentHash> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: "cs_objects",
        key: anchor.to_owned(),
        detail: format!("content hash has {} bytes", bytes.len()),
    })?;
    Ok(ContentHash(arr))
}

fn object_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredCsObject> {
    let anchor: String = row.try_get("anchor").map_err(|e| StoreError::query("read cs object", e))?;
    let get = |e| StoreError::query("read cs object", e);
    let attrs_json: String = row.try_get("attributes").map_err(get)?;
    let attributes: Attributes = serde_json::from_str(&attrs_json).map_err(|e| StoreError::Corrupt {
        table: "cs_objects",
        key: anchor.clone(),
        detail: format!("attributes are not valid JSON: {e}"),
    })?;
    let hash: Vec<u8> = row.try_get("content_hash").map_err(get)?;
    Ok(StoredCsObject {
        connector: row.try_get("connector").map_err(get)?,
        content_hash: hash_from(&hash, &anchor)?,
        immutable_id: row.try_get("immutable_id").map_err(get)?,
        dn: row.try_get("dn").map_err(get)?,
        object_class: row.try_get("object_class").map_err(get)?,
        attributes,
        state: row.try_get("state").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        changed_at: row.try_get("changed_at").map_err(get)?,
        change_seq: row.try_get("change_seq").map_err(get)?,
        anchor,
    })
}

/// Brings a per-anchor side table (`cs_references`, `cs_proxy_addresses`) to `pairs` for these
/// anchors: rows no longer listed are deleted and new ones inserted, while rows that stay are
/// not touched. Deleting every row of an anchor and inserting it again rewrote a leaf page of
/// the table and of its value index per row even when nothing changed (a title change rewrote
/// the object's manager reference and its three proxy addresses).
async fn replace_anchor_pairs(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &'static str,
    column: &'static str,
    connector: ConnectorId,
    anchors: &[&str],
    pairs: &[(&str, String)],
) -> Result<()> {
    let q = |e| StoreError::query("write import batch", e);
    let json =
        |e: serde_json::Error| StoreError::Corrupt { table, key: String::new(), detail: e.to_string() };
    let mut by_anchor: HashMap<&str, Vec<&str>> = HashMap::with_capacity(anchors.len());
    for (anchor, value) in pairs {
        by_anchor.entry(*anchor).or_default().push(value.as_str());
    }
    for chunk in anchors.chunks(2000) {
        let listed: Vec<(&str, &str)> = chunk
            .iter()
            .flat_map(|a| by_anchor.get(a).into_iter().flatten().map(move |v| (*a, *v)))
            .collect();
        let anchor_list = serde_json::to_string(chunk).map_err(json)?;
        let pair_list = serde_json::to_string(&listed).map_err(json)?;
        sqlx::query(sqlx::AssertSqlSafe(unlisted_pairs_delete(table, column)))
            .bind(connector)
            .bind(&anchor_list)
            .bind(&pair_list)
            .execute(&mut **tx)
            .await
            .map_err(q)?;
    }
    insert_anchor_pairs(tx, table, column, connector, pairs).await?;
    Ok(())
}

/// Deletes the rows of a side table for the anchors of a JSON list (?2) that a JSON list of
/// `[anchor, value]` pairs (?3) does not name.
fn unlisted_pairs_delete(table: &str, column: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE connector_id = ?1 AND anchor IN (SELECT value FROM json_each(?2)) \
         AND (anchor, {column}) NOT IN (SELECT value ->> 0, value ->> 1 FROM json_each(?3))"
    )
}

/// The narrow update of [`Store::write_import_batch`] for `rows` objects: it rewrites an object
/// stored, present, with the same values in every indexed column (`v` is the batch's `VALUES`:
/// anchor, attributes, hash, change sequence, immutable id, DN, normalized DN, object class,
/// UPN, mail; then the change time, the run and the connector are bound).
fn narrow_update(rows: usize) -> String {
    let mut sql = String::from(
        "UPDATE cs_objects SET attributes = v.column2, content_hash = v.column3, changed_at = ?, \
         change_seq = v.column4, last_run_id = ? FROM (VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?,?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?,?)" });
    }
    sql.push_str(
        ") AS v WHERE cs_objects.connector_id = ? AND cs_objects.anchor = v.column1 \
         AND cs_objects.state = 'present' AND cs_objects.immutable_id IS v.column5 AND cs_objects.dn = v.column6 \
         AND cs_objects.dn_norm = v.column7 AND cs_objects.object_class = v.column8 \
         AND cs_objects.upn IS v.column9 AND cs_objects.mail IS v.column10",
    );
    sql
}

/// Inserts `(anchor, value)` rows into a per-anchor side table (rows already there are left
/// as they are).
async fn insert_anchor_pairs(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &'static str,
    column: &'static str,
    connector: ConnectorId,
    pairs: &[(&str, String)],
) -> Result<()> {
    for chunk in pairs.chunks(5000) {
        let mut sql = format!("INSERT OR IGNORE INTO {table} (connector_id, anchor, {column}) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (anchor, value) in chunk {
            query = query.bind(connector).bind(*anchor).bind(value.as_str());
        }
        query.execute(&mut **tx).await.map_err(|e| StoreError::query("write import batch", e))?;
    }
    Ok(())
}

impl Store {
    /// The whole connector space of one connector as anchor -> (hash, DN, state): what a full
    /// import diffs against.
    pub async fn load_cs_index(&self, connector: ConnectorId) -> Result<HashMap<String, CsIndexEntry>> {
        const OP: &str = "load connector space";
        const SQL: &str =
            "SELECT anchor, content_hash, dn_norm, state FROM cs_objects WHERE connector_id = ?";
        let rows = self
            .select(OP, SQL, &[Param::Int(connector)], |row| {
                let anchor = row.text(OP, "anchor")?;
                let hash = hash_from(&row.blob(OP, "content_hash")?, &anchor)?;
                let entry = CsIndexEntry {
                    hash,
                    dn_norm: row.text(OP, "dn_norm")?,
                    present: row.text(OP, "state")? == "present",
                };
                Ok((anchor, entry))
            })
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The anchors of a connector's present objects that `keep` keeps (what a full import did
    /// not see, say), without holding the rest.
    pub async fn cs_present_anchors(
        &self,
        connector: ConnectorId,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        const OP: &str = "load connector space";
        const SQL: &str = "SELECT anchor FROM cs_objects WHERE connector_id = ? AND state = 'present'";
        let rows = self
            .select(OP, SQL, &[Param::Int(connector)], |row| {
                let anchor = row.text(OP, "anchor")?;
                Ok(keep(&anchor).then_some(anchor))
            })
            .await?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The stored objects for some anchors of one connector (what a delta import diffs against).
    pub async fn cs_objects_by_anchor(
        &self,
        connector: ConnectorId,
        anchors: &[&str],
    ) -> Result<HashMap<String, StoredCsObject>> {
        let mut out = HashMap::with_capacity(anchors.len());
        for chunk in anchors.chunks(2000) {
            let list = serde_json::to_string(chunk).map_err(|e| StoreError::Corrupt {
                table: "cs_objects",
                key: String::new(),
                detail: e.to_string(),
            })?;
            let sql = format!(
                "{SELECT_OBJECT} WHERE o.connector_id = ? AND o.anchor IN (SELECT value FROM json_each(?))"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(connector)
                .bind(list)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StoreError::query("read connector space", e))?;
            for row in &rows {
                let obj = object_from_row(row)?;
                out.insert(obj.anchor.clone(), obj);
            }
        }
        Ok(out)
    }

    /// Writes one import batch in one transaction: the CS writes (sorted by anchor here), the
    /// per-object errors, the run's counters, and the watermark that belongs to the batch.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_import_batch(
        &self,
        connector: ConnectorId,
        run: RunId,
        mut writes: Vec<CsWrite>,
        errors: &[crate::RunError],
        counts: &RunCounts,
        watermark: Option<&Watermark>,
        now: i64,
    ) -> Result<()> {
        writes.sort_by(|a, b| a.anchor().cmp(b.anchor()));
        let q = |e| StoreError::query("write import batch", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        let n = i64::try_from(writes.len()).unwrap_or(i64::MAX);
        let top: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + ? WHERE name = 'change_seq' RETURNING value",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await
        .map_err(q)?;
        let first_seq = top - n + 1;
        // Writes go as multi-row statements with bound parameters (hundreds of rows per
        // statement), not one statement per object: a batch costs a few statements instead of
        // thousands of round trips to SQLite's worker thread.
        let mut upserts: Vec<(&CsObject, &ContentHash, &str, i64)> = Vec::new();
        let mut proxies: Vec<(&str, String)> = Vec::new();
        let mut references: Vec<(&str, String)> = Vec::new();
        let mut deletes: Vec<(&str, i64)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let seq = first_seq + i as i64;
            match w {
                CsWrite::Upsert { object, hash, attributes_json } => {
                    if let Some(values) = object.attributes.get("proxyAddresses").and_then(|v| v.texts()) {
                        proxies.extend(values.iter().map(|a| (object.anchor.as_str(), a.to_lowercase())));
                    }
                    for (_, values) in object.attributes.iter() {
                        if let syncctl_core::AttrValues::Reference(dns) = values {
                            for dn in dns {
                                let norm = Dn::parse(dn)
                                    .map(|d| d.normalized().to_owned())
                                    .unwrap_or_else(|_| dn.to_lowercase());
                                references.push((object.anchor.as_str(), norm));
                            }
                        }
                    }
                    upserts.push((object, hash, attributes_json.as_str(), seq));
                }
                CsWrite::Delete { anchor } => deletes.push((anchor.as_str(), seq)),
            }
        }
        // An update that leaves every indexed column as it was (a title changed, say) rewrites
        // the row and its change-sequence entry only: an upsert assigns every column, and SQLite
        // rewrites the entry of each index over an assigned column, changed or not (seven pages
        // an object instead of two). What this matches, the upsert below leaves alone. Only a
        // batch with updates or renames (objects the diff found stored and present; a rename
        // also rewrites the referrers of the old DN) can match: a batch of adds skips the probes.
        let narrow = if counts.updates + counts.renames > 0 { upserts.as_slice() } else { &[] };
        for chunk in narrow.chunks(1000) {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(narrow_update(chunk.len()))).bind(now).bind(run);
            for (object, hash, attrs, seq) in chunk {
                query = query
                    .bind(object.anchor.as_str())
                    .bind(*attrs)
                    .bind(hash.0.as_slice())
                    .bind(*seq)
                    .bind(object.immutable_id.map(|i| i.to_base64()))
                    .bind(object.dn.as_str())
                    .bind(object.dn.normalized())
                    .bind(object.object_class.as_str())
                    .bind(object.attributes.first_text("userPrincipalName").map(str::to_lowercase))
                    .bind(object.attributes.first_text("mail").map(str::to_lowercase));
            }
            query.bind(connector).execute(&mut *tx).await.map_err(q)?;
        }
        // 14 parameters a row; SQLite allows 32,766 per statement.
        for chunk in upserts.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO cs_objects (connector_id, anchor, immutable_id, dn, dn_norm, object_class, attributes, \
                 content_hash, state, upn, mail, created_at, changed_at, change_seq, last_run_id) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 {
                    "(?,?,?,?,?,?,?,?,'present',?,?,?,?,?,?)"
                } else {
                    ",(?,?,?,?,?,?,?,?,'present',?,?,?,?,?,?)"
                });
            }
            sql.push_str(
                " ON CONFLICT (connector_id, anchor) DO UPDATE SET immutable_id = excluded.immutable_id, \
                 dn = excluded.dn, dn_norm = excluded.dn_norm, object_class = excluded.object_class, \
                 attributes = excluded.attributes, content_hash = excluded.content_hash, state = 'present', \
                 upn = excluded.upn, mail = excluded.mail, changed_at = excluded.changed_at, \
                 change_seq = excluded.change_seq, last_run_id = excluded.last_run_id \
                 WHERE cs_objects.change_seq IS NOT excluded.change_seq",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (object, hash, attrs, seq) in chunk {
                query = query
                    .bind(connector)
                    .bind(object.anchor.as_str())
                    .bind(object.immutable_id.map(|i| i.to_base64()))
                    .bind(object.dn.as_str())
                    .bind(object.dn.normalized())
                    .bind(object.object_class.as_str())
                    .bind(*attrs)
                    .bind(hash.0.as_slice())
                    .bind(object.attributes.first_text("userPrincipalName").map(str::to_lowercase))
                    .bind(object.attributes.first_text("mail").map(str::to_lowercase))
                    .bind(now)
                    .bind(now)
                    .bind(*seq)
                    .bind(run);
            }
            query.execute(&mut *tx).await.map_err(q)?;
        }
        let anchors: Vec<&str> = writes.iter().map(CsWrite::anchor).collect();
        replace_anchor_pairs(&mut tx, "cs_references", "target_dn_norm", connector, &anchors, &references)
            .await?;
        replace_anchor_pairs(&mut tx, "cs_proxy_addresses", "address", connector, &anchors, &proxies).await?;
        for chunk in deletes.chunks(5000) {
            let mut sql = String::from(
                "UPDATE cs_objects SET state = 'deleted', changed_at = ?, change_seq = d.column2, last_run_id = ? FROM (VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "(?,?)" } else { ",(?,?)" });
            }
            sql.push_str(") AS d WHERE cs_objects.connector_id = ? AND cs_objects.anchor = d.column1");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(run);
            for (anchor, seq) in chunk {
                query = query.bind(*anchor).bind(*seq);
            }
            query.bind(connector).execute(&mut *tx).await.map_err(q)?;
        }
        crate::runs::insert_errors(&mut tx, run, errors, now).await?;
        crate::runs::add_counts(&mut tx, run, counts).await?;
        if let Some(w) = watermark {
            crate::watermark::put(&mut tx, connector, w, run, now).await?;
        }
        tx.commit().await.map_err(q)?;
        Ok(())
    }

    /// The present CS objects of one connector that refer (member, manager, ...) to `dn_norm`.
    pub async fn referrers(&self, connector: ConnectorId, dn_norm: &str) -> Result<Vec<StoredCsObject>> {
        let sql = format!(
            "{SELECT_OBJECT} WHERE o.connector_id = ? AND o.state = 'present' AND o.anchor IN \
             (SELECT anchor FROM cs_references WHERE connector_id = ? AND target_dn_norm = ?) ORDER BY o.anchor"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(connector)
            .bind(connector)
            .bind(dn_norm)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("find referrers", e))?;
        rows.iter().map(object_from_row).collect()
    }

    /// Finds CS objects across all connectors.
    pub async fn find_cs_objects(&self, lookup: &CsLookup) -> Result<Vec<StoredCsObject>> {
        let (clause, value) = match lookup {
            CsLookup::Dn(dn) => ("o.dn_norm = ?", dn.normalized().to_owned()),
            CsLookup::Anchor(a) => ("o.anchor = ?", a.clone()),
            CsLookup::ImmutableId(i) => ("o.immutable_id = ?", i.clone()),
        };
        let sql = format!("{SELECT_OBJECT} WHERE {clause} ORDER BY c.name, o.anchor");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("find cs objects", e))?;
        rows.iter().map(object_from_row).collect()
    }

    /// Every CS object of one connector, in anchor order (tests and exports of the space).
    pub async fn cs_objects(&self, connector: ConnectorId) -> Result<Vec<StoredCsObject>> {
        let sql = format!("{SELECT_OBJECT} WHERE o.connector_id = ? ORDER BY o.anchor");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(connector)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("list cs objects", e))?;
        rows.iter().map(object_from_row).collect()
    }

    /// How many CS objects of one connector are present (not tombstones).
    pub async fn present_count(&self, connector: ConnectorId) -> Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM cs_objects WHERE connector_id = ? AND state = 'present'")
            .bind(connector)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::query("count cs objects", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncctl_core::{AttrValues, ImmutableId};

    fn object(anchor: &str, dn: &str, upn: &str) -> CsObject {
        let mut attributes = Attributes::new();
        attributes.insert("userPrincipalName", AttrValues::String(vec![upn.into()]));
        attributes.insert("proxyAddresses", AttrValues::String(vec![format!("SMTP:{upn}")]));
        let mut o = CsObject {
            anchor: Anchor::new(anchor).unwrap(),
            immutable_id: Some(ImmutableId::from_object_guid(&[7u8; 16]).unwrap()),
            dn: Dn::parse(dn).unwrap(),
            object_class: "user".into(),
            attributes,
        };
        o.normalize();
        o
    }

    #[tokio::test]
    async fn batches_upsert_delete_and_carry_watermark() {
        let store = Store::open_in_memory().await.unwrap();
        let c = store.ensure_connector("ad", "ldap-ad", 1).await.unwrap();
        assert_eq!(store.ensure_connector("ad", "ldap-ad", 2).await.unwrap(), c);
        let run = store.start_run("full-import", Some(c), "ad", 10).await.unwrap();
        let a = object("b-anchor", "CN=B,DC=x", "B@x.com");
        let b = object("a-anchor", "CN=A,DC=x", "a@x.com");
        let upsert = |o: &CsObject| {
            let (hash, attributes_json) = o.hash_and_serialize();
            CsWrite::Upsert { hash, attributes_json, object: o.clone() }
        };
        let writes = vec![upsert(&a), upsert(&b)];
        let wm = Watermark {
            kind: "usn".into(),
            value: b"42".to_vec(),
            server: "dc1".into(),
            extra: Default::default(),
        };
        let counts = RunCounts { adds: 2, ..Default::default() };
        store.write_import_batch(c, run, writes, &[], &counts, Some(&wm), 11).await.unwrap();

        let index = store.load_cs_index(c).await.unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index["b-anchor"].hash, a.content_hash());
        assert_eq!(index["b-anchor"].dn_norm, "cn=b,dc=x");
        let found = store.find_cs_objects(&CsLookup::Dn(Dn::parse("cn=b, dc=X").unwrap())).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].attributes, a.attributes);
        let by_id =
            store.find_cs_objects(&CsLookup::ImmutableId("BwcHBwcHBwcHBwcHBwcHBw==".into())).await.unwrap();
        assert_eq!(by_id.len(), 2);
        assert_eq!(store.watermark(c).await.unwrap().unwrap().watermark, Some(wm));

        let del = vec![CsWrite::Delete { anchor: Anchor::new("a-anchor").unwrap() }];
        store
            .write_import_batch(c, run, del, &[], &RunCounts { deletes: 1, ..Default::default() }, None, 12)
            .await
            .unwrap();
        let index = store.load_cs_index(c).await.unwrap();
        assert!(!index["a-anchor"].present);
        assert!(index["b-anchor"].present);
        assert_eq!(store.present_count(c).await.unwrap(), 1);
        // the watermark is kept when a batch carries none
        assert_eq!(store.watermark(c).await.unwrap().unwrap().watermark.unwrap().value, b"42");
        let objects = store.cs_objects_by_anchor(c, &["a-anchor", "missing"]).await.unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects["a-anchor"].state, "deleted");
        assert!(objects["a-anchor"].change_seq > found[0].change_seq);
        let r = store.run(run).await.unwrap().unwrap();
        assert_eq!((r.counts.adds, r.counts.deletes), (2, 1));
        store.check_integrity().await.unwrap();
    }

    /// The narrow update finds each object through the (connector, anchor) index, and the side
    /// tables' stale rows are found through their anchor: no scan of a table.
    #[tokio::test]
    async fn the_narrow_update_and_the_side_table_deletes_search_by_anchor() {
        let store = Store::open_in_memory().await.unwrap();
        let store = &store;
        let plan = |sql: String| async move { crate::plan_steps(store, &sql).await.join("; ") };
        let update = plan(narrow_update(2)).await;
        assert!(
            update.contains(
                "SEARCH cs_objects USING INDEX sqlite_autoindex_cs_objects_1 (connector_id=? AND anchor=?)"
            ),
            "{update}"
        );
        assert!(!update.contains("SCAN cs_objects"), "{update}");
        let refs = plan(unlisted_pairs_delete("cs_references", "target_dn_norm")).await;
        assert!(
            refs.contains(
                "SEARCH cs_references USING COVERING INDEX cs_references_anchor (connector_id=? AND anchor=?)"
            ),
            "{refs}"
        );
        let proxies = plan(unlisted_pairs_delete("cs_proxy_addresses", "address")).await;
        assert!(
            proxies.contains("SEARCH cs_proxy_addresses USING PRIMARY KEY (connector_id=? AND anchor=?)"),
            "{proxies}"
        );
    }

    /// What the triggers of [`an_update_that_keeps_the_indexed_columns_rewrites_only_what_changed`]
    /// logged since the last call, sorted.
    async fn logged(store: &Store) -> Vec<String> {
        let mut out: Vec<String> =
            sqlx::query_scalar("SELECT what FROM write_log").fetch_all(&store.pool).await.unwrap();
        sqlx::query("DELETE FROM write_log").execute(&store.pool).await.unwrap();
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_update_that_keeps_the_indexed_columns_rewrites_only_what_changed() {
        let store = Store::open_in_memory().await.unwrap();
        let c = store.ensure_connector("ad", "ldap-ad", 1).await.unwrap();
        let run = store.start_run("delta-import", Some(c), "ad", 10).await.unwrap();
        let write = |o: &CsObject| {
            let (hash, attributes_json) = o.hash_and_serialize();
            vec![CsWrite::Upsert { hash, attributes_json, object: o.clone() }]
        };
        let adds = RunCounts { adds: 1, ..Default::default() };
        let updates = RunCounts { updates: 1, ..Default::default() };
        let mut o = object("a-anchor", "CN=A,DC=x", "a@x.com");
        o.attributes
            .insert("proxyAddresses", AttrValues::String(vec!["SMTP:a@x.com".into(), "smtp:b@x.com".into()]));
        o.attributes.insert("manager", AttrValues::Reference(vec!["CN=M,DC=x".into()]));
        store.write_import_batch(c, run, write(&o), &[], &adds, None, 11).await.unwrap();
        // SQLite fires `UPDATE OF column` triggers when a statement assigns the column, changed or
        // not: the same condition under which it rewrites the column's index entries.
        for sql in [
            "CREATE TABLE write_log (what TEXT NOT NULL)",
            "CREATE TRIGGER log_indexed AFTER UPDATE OF immutable_id, dn, dn_norm, object_class, state, upn, mail \
             ON cs_objects BEGIN INSERT INTO write_log VALUES ('indexed columns assigned'); END",
            "CREATE TRIGGER log_row AFTER UPDATE OF attributes ON cs_objects \
             BEGIN INSERT INTO write_log VALUES ('row'); END",
            "CREATE TRIGGER log_proxy_del AFTER DELETE ON cs_proxy_addresses \
             BEGIN INSERT INTO write_log VALUES ('proxy deleted ' || old.address); END",
            "CREATE TRIGGER log_proxy_ins AFTER INSERT ON cs_proxy_addresses \
             BEGIN INSERT INTO write_log VALUES ('proxy inserted ' || new.address); END",
            "CREATE TRIGGER log_ref_del AFTER DELETE ON cs_references \
             BEGIN INSERT INTO write_log VALUES ('reference deleted ' || old.target_dn_norm); END",
            "CREATE TRIGGER log_ref_ins AFTER INSERT ON cs_references \
             BEGIN INSERT INTO write_log VALUES ('reference inserted ' || new.target_dn_norm); END",
        ] {
            sqlx::query(sql).execute(&store.pool).await.unwrap();
        }
        let proxies = |store: &Store| {
            let pool = store.pool.clone();
            async move {
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT address FROM cs_proxy_addresses WHERE anchor = 'a-anchor' ORDER BY address",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                rows
            }
        };

        // A title: the row and nothing else.
        o.attributes.insert("title", AttrValues::String(vec!["Engineer".into()]));
        store.write_import_batch(c, run, write(&o), &[], &updates, None, 12).await.unwrap();
        assert_eq!(logged(&store).await, ["row"]);
        let stored = &store.cs_objects_by_anchor(c, &["a-anchor"]).await.unwrap()["a-anchor"];
        assert_eq!(stored.attributes, o.attributes);
        assert_eq!(store.load_cs_index(c).await.unwrap()["a-anchor"].hash, o.content_hash());
        let seq = stored.change_seq;

        // A proxy address replaced, a reference added: only those rows of the side tables.
        o.attributes
            .insert("proxyAddresses", AttrValues::String(vec!["SMTP:a@x.com".into(), "smtp:c@x.com".into()]));
        o.attributes.insert("manager", AttrValues::Reference(vec!["CN=M,DC=x".into(), "CN=N,DC=x".into()]));
        store.write_import_batch(c, run, write(&o), &[], &updates, None, 13).await.unwrap();
        assert_eq!(
            logged(&store).await,
            [
                "proxy deleted smtp:b@x.com",
                "proxy inserted smtp:c@x.com",
                "reference inserted cn=n,dc=x",
                "row"
            ]
        );
        assert_eq!(proxies(&store).await, ["smtp:a@x.com", "smtp:c@x.com"]);
        let stored = &store.cs_objects_by_anchor(c, &["a-anchor"]).await.unwrap()["a-anchor"];
        assert!(stored.change_seq > seq);

        // A new UPN changes an indexed column: the whole upsert.
        o.attributes.insert("userPrincipalName", AttrValues::String(vec!["A2@x.com".into()]));
        store.write_import_batch(c, run, write(&o), &[], &updates, None, 14).await.unwrap();
        assert_eq!(logged(&store).await, ["indexed columns assigned", "row"]);
        let upn: Option<String> = sqlx::query_scalar("SELECT upn FROM cs_objects WHERE anchor = 'a-anchor'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(upn.as_deref(), Some("a2@x.com"));

        // A tombstone that comes back with the same columns is made present again. While it is a
        // tombstone it keeps no references: the sync's referrer lookup counts on that and does not
        // read a referrer's state.
        let manager = ["cn=m,dc=x".to_owned()];
        let id = store.cs_ids_by_anchor(c, &["a-anchor"]).await.unwrap()["a-anchor"];
        assert_eq!(store.cs_referrer_ids_many(c, &manager).await.unwrap(), [id]);
        let delete = vec![CsWrite::Delete { anchor: Anchor::new("a-anchor").unwrap() }];
        store
            .write_import_batch(
                c,
                run,
                delete,
                &[],
                &RunCounts { deletes: 1, ..Default::default() },
                None,
                15,
            )
            .await
            .unwrap();
        assert_eq!(proxies(&store).await, Vec::<String>::new());
        assert!(store.cs_referrer_ids_many(c, &manager).await.unwrap().is_empty());
        logged(&store).await;
        store.write_import_batch(c, run, write(&o), &[], &updates, None, 16).await.unwrap();
        assert!(store.load_cs_index(c).await.unwrap()["a-anchor"].present);
        assert_eq!(proxies(&store).await, ["smtp:a@x.com", "smtp:c@x.com"]);
        assert_eq!(store.present_count(c).await.unwrap(), 1);
        store.check_integrity().await.unwrap();
    }
}
