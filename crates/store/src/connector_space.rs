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

/// Deletes the rows of `table` (a per-anchor side table) for these anchors of a connector.
async fn delete_anchors(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &'static str,
    connector: ConnectorId,
    anchors: &[&str],
) -> Result<()> {
    for chunk in anchors.chunks(5000) {
        let mut sql = format!("DELETE FROM {table} WHERE connector_id = ? AND anchor IN (");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(connector);
        for a in chunk {
            query = query.bind(*a);
        }
        query.execute(&mut **tx).await.map_err(|e| StoreError::query("write import batch", e))?;
    }
    Ok(())
}

/// Inserts `(anchor, value)` rows into a per-anchor side table (duplicates ignored).
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
                 change_seq = excluded.change_seq, last_run_id = excluded.last_run_id",
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
        delete_anchors(&mut tx, "cs_proxy_addresses", connector, &anchors).await?;
        delete_anchors(&mut tx, "cs_references", connector, &anchors).await?;
        insert_anchor_pairs(&mut tx, "cs_references", "target_dn_norm", connector, &references).await?;
        insert_anchor_pairs(&mut tx, "cs_proxy_addresses", "address", connector, &proxies).await?;
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
}
