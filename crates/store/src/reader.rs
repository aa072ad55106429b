//! The read connection: the sync's bulk reads (connector-space objects, MV objects, links, the
//! lookups by DN, anchor and join key) run on a connection of their own, called in place
//! (rusqlite) on the caller's thread, instead of through sqlx's worker thread, which hands every
//! row across a channel and wakes the reading task once per row: at 10,000 objects about a third
//! of a full sync's CPU went to that hand-off. The connection is read-only (`query_only`), so it
//! sees what the pool's transactions have committed (WAL) and can never write.
//!
//! A read blocks the task that asks for it while SQLite runs it (milliseconds for a batch of
//! 5,000 rows on a warm cache); the runtime is multi-threaded, so `syncctl serve` keeps answering.
//! A thread of its own for the connection, one hand-off per statement, was measured and left
//! out: at S, R5 took 2.23 s instead of 2.08 s and its peak RSS was 132 MB instead of 106 MB.
//!
//! The SQL and the decoding of each row are the same on both paths: a store in memory (tests)
//! has no second connection (another connection to `:memory:` is another database) and runs
//! the same statements through the pool.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Row as _;

use crate::Store;
use crate::error::{Result, StoreError};

/// A bound parameter of a read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Null => Ok(rusqlite::types::ToSqlOutput::Owned(rusqlite::types::Value::Null)),
            Self::Int(i) => i.to_sql(),
            Self::Text(t) => t.to_sql(),
        }
    }
}

/// One row of a read, whichever connection it came from.
pub(crate) trait Columns {
    fn int(&self, operation: &'static str, column: &str) -> Result<i64>;
    fn opt_int(&self, operation: &'static str, column: &str) -> Result<Option<i64>>;
    fn text(&self, operation: &'static str, column: &str) -> Result<String>;
    fn opt_text(&self, operation: &'static str, column: &str) -> Result<Option<String>>;
    fn blob(&self, operation: &'static str, column: &str) -> Result<Vec<u8>>;
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn int(&self, operation: &'static str, column: &str) -> Result<i64> {
        self.try_get(column).map_err(|e| StoreError::query(operation, e))
    }
    fn opt_int(&self, operation: &'static str, column: &str) -> Result<Option<i64>> {
        self.try_get(column).map_err(|e| StoreError::query(operation, e))
    }
    fn text(&self, operation: &'static str, column: &str) -> Result<String> {
        self.try_get(column).map_err(|e| StoreError::query(operation, e))
    }
    fn opt_text(&self, operation: &'static str, column: &str) -> Result<Option<String>> {
        self.try_get(column).map_err(|e| StoreError::query(operation, e))
    }
    fn blob(&self, operation: &'static str, column: &str) -> Result<Vec<u8>> {
        self.try_get(column).map_err(|e| StoreError::query(operation, e))
    }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, operation: &'static str, column: &str) -> Result<i64> {
        self.get(column).map_err(|e| StoreError::read(operation, e))
    }
    fn opt_int(&self, operation: &'static str, column: &str) -> Result<Option<i64>> {
        self.get(column).map_err(|e| StoreError::read(operation, e))
    }
    fn text(&self, operation: &'static str, column: &str) -> Result<String> {
        self.get(column).map_err(|e| StoreError::read(operation, e))
    }
    fn opt_text(&self, operation: &'static str, column: &str) -> Result<Option<String>> {
        self.get(column).map_err(|e| StoreError::read(operation, e))
    }
    fn blob(&self, operation: &'static str, column: &str) -> Result<Vec<u8>> {
        self.get(column).map_err(|e| StoreError::read(operation, e))
    }
}

/// The read connection of a database file; `None` once the store is closed.
#[derive(Debug)]
pub(crate) struct Reader(Mutex<Option<rusqlite::Connection>>);

impl Reader {
    /// Opens the read connection of a database the pool has created and migrated.
    pub(crate) fn open(path: &Path, location: &str) -> Result<Arc<Self>> {
        use rusqlite::OpenFlags;
        let open = |e| StoreError::OpenReader { location: location.to_owned(), source: e };
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(open)?;
        // The same page cache as each pooled connection; never a write.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = {}; PRAGMA temp_store = memory; PRAGMA query_only = ON;",
            crate::CACHE_SIZE_PRAGMA
        ))
        .map_err(open)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Arc::new(Self(Mutex::new(Some(conn)))))
    }

    pub(crate) fn close(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl Store {
    /// Runs a read and decodes each row: on the read connection where there is one, else
    /// through the pool.
    pub(crate) async fn select<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[Param<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(reader) = &self.reader {
            let guard = reader.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(conn) = guard.as_ref() {
                let read = |e| StoreError::read(operation, e);
                let mut statement = conn.prepare_cached(sql).map_err(read)?;
                let mut rows = statement.query(rusqlite::params_from_iter(params.iter())).map_err(read)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(read)? {
                    out.push(decode(row)?);
                }
                return Ok(out);
            }
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for p in params {
            query = match *p {
                Param::Null => query.bind(None::<i64>),
                Param::Int(i) => query.bind(i),
                Param::Text(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(|e| StoreError::query(operation, e))?;
        rows.iter().map(|row| decode(row)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CsWrite, RunCounts};
    use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, ImmutableId};

    fn upsert(anchor: &str, dn: &str, upn: &str) -> CsWrite {
        let mut attributes = Attributes::new();
        attributes.insert("userPrincipalName", AttrValues::String(vec![upn.into()]));
        let mut object = CsObject {
            anchor: Anchor::new(anchor).unwrap(),
            immutable_id: Some(ImmutableId::from_object_guid(&[9u8; 16]).unwrap()),
            dn: syncctl_core::Dn::parse(dn).unwrap(),
            object_class: "user".into(),
            attributes,
        };
        object.normalize();
        let (hash, attributes_json) = object.hash_and_serialize();
        CsWrite::Upsert { hash, attributes_json, object }
    }

    /// A file store, its connector, and the same store without its read connection (the pool's path).
    async fn file_store(dir: &Path) -> (Store, Store, i64) {
        let store = Store::open(&dir.join("m.db")).await.unwrap();
        assert!(store.reader.is_some(), "a file store reads on its own connection");
        let mut pooled = store.clone();
        pooled.reader = None;
        let c = store.ensure_connector("ad", "ldap-ad", 1).await.unwrap();
        (store, pooled, c)
    }

    #[tokio::test]
    async fn the_read_connection_sees_each_committed_batch_and_reads_what_the_pool_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (store, pooled, c) = file_store(dir.path()).await;
        let run = store.start_run("full-import", Some(c), "ad", 10).await.unwrap();
        let counts = RunCounts::default();
        let first = vec![upsert("a", "CN=A,DC=x", "a@x.com"), upsert("b", "CN=B,DC=x", "b@x.com")];
        store.write_import_batch(c, run, first, &[], &counts, None, 11).await.unwrap();
        let seen = store.cs_changed_since(c, 0, 100).await.unwrap();
        assert_eq!(seen.iter().map(|o| o.anchor.as_str()).collect::<Vec<_>>(), ["a", "b"]);

        // a later batch is visible at once, with no new connection
        let second =
            vec![upsert("c", "CN=C,DC=x", "c@x.com"), CsWrite::Delete { anchor: Anchor::new("a").unwrap() }];
        store.write_import_batch(c, run, second, &[], &counts, None, 12).await.unwrap();
        let after = store.cs_changed_since(c, seen[1].change_seq, 100).await.unwrap();
        let states: Vec<_> = after.iter().map(|o| (o.anchor.as_str(), o.present)).collect();
        assert_eq!(states.len(), 2);
        assert!(states.contains(&("c", true)) && states.contains(&("a", false)), "{states:?}");

        // both paths give the same objects and lookups
        assert_eq!(
            store.cs_changed_since(c, 0, 100).await.unwrap(),
            pooled.cs_changed_since(c, 0, 100).await.unwrap()
        );
        let ids: Vec<i64> = after.iter().map(|o| o.id).chain([seen[1].id, 999_999]).collect();
        let by_id = store.cs_by_ids(&ids).await.unwrap();
        assert_eq!(by_id.len(), 3);
        assert_eq!(by_id, pooled.cs_by_ids(&ids).await.unwrap());
        let by_dn = store.cs_ids_by_dn(c, &["cn=b,dc=x", "cn=a,dc=x", "cn=c,dc=x"]).await.unwrap();
        assert_eq!(by_dn.len(), 2, "a deleted object is not found by DN: {by_dn:?}");
        assert_eq!(by_dn, pooled.cs_ids_by_dn(c, &["cn=b,dc=x", "cn=a,dc=x", "cn=c,dc=x"]).await.unwrap());
        let by_anchor = store.cs_ids_by_anchor(c, &["a", "b", "c"]).await.unwrap();
        assert_eq!(
            by_anchor.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(),
            ["b", "c"].into()
        );
        assert_eq!(by_anchor, pooled.cs_ids_by_anchor(c, &["a", "b", "c"]).await.unwrap());
    }

    #[tokio::test]
    async fn metaverse_objects_and_links_read_alike_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (store, pooled, c) = file_store(dir.path()).await;
        let run = store.start_run("full-import", Some(c), "ad", 10).await.unwrap();
        let writes = vec![upsert("a", "CN=A,DC=x", "a@x.com")];
        store.write_import_batch(c, run, writes, &[], &RunCounts::default(), None, 11).await.unwrap();
        let cs = store.cs_changed_since(c, 0, 10).await.unwrap()[0].id;
        let mut attributes = Attributes::new();
        attributes.insert("displayName", AttrValues::String(vec!["A".into()]));
        sqlx::query(
            "INSERT INTO mv_objects (id, object_type, attributes, provenance, content_hash, created_at, changed_at) \
             VALUES (7, 'person', ?, '{}', x'00', 1, 2)",
        )
        .bind(serde_json::to_string(&attributes).unwrap())
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO mv_links (cs_id, mv_id, connector_id, rule, how, detail, linked_at) \
             VALUES (?, 7, ?, 'in-users', 'projected', '', 3)",
        )
        .bind(cs)
        .bind(c)
        .execute(&store.pool)
        .await
        .unwrap();
        let mv = store.mv_by_ids(&[7, 8]).await.unwrap();
        assert_eq!(mv.len(), 1);
        assert_eq!((mv[&7].object_type.as_str(), mv[&7].created_at, mv[&7].changed_at), ("person", 1, 2));
        assert_eq!(mv[&7].attributes, attributes);
        assert_eq!(mv, pooled.mv_by_ids(&[7, 8]).await.unwrap());
        let links = store.links_by_cs(&[cs]).await.unwrap();
        assert_eq!(
            (links[&cs].mv_id, links[&cs].how, links[&cs].linked_at),
            (7, crate::LinkHow::Projected, 3)
        );
        assert_eq!(links, pooled.links_by_cs(&[cs]).await.unwrap());
        assert_eq!(store.links_by_mv(&[7]).await.unwrap(), pooled.links_by_mv(&[7]).await.unwrap());
        assert_eq!(store.links_by_mv(&[7]).await.unwrap().len(), 1);
        let anchors = store.target_anchors(c, &[7, 8]).await.unwrap();
        assert_eq!(anchors, [(7, "a".to_owned())].into());
        assert_eq!(anchors, pooled.target_anchors(c, &[7, 8]).await.unwrap());
    }

    #[tokio::test]
    async fn pending_exports_read_alike_on_both_paths_whole_reduced_by_id_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, pooled, c) = file_store(dir.path()).await;
        let other = store.ensure_connector("cloud", "graph", 1).await.unwrap();
        let changes = serde_json::to_string(&vec![crate::AttributeChange {
            attribute: "manager".into(),
            old: None,
            new: Some(AttrValues::Reference(vec!["mv:8".into()])),
        }])
        .unwrap();
        // (id, connector, target key, mv, cs, operation, display, status, created anchor)
        type Row<'a> =
            (i64, i64, &'a str, Option<i64>, Option<i64>, &'a str, &'a str, &'a str, Option<&'a str>);
        let rows: [Row<'_>; 4] = [
            (1, c, "mv:7", Some(7), None, "add", "b@x.com", "exported", Some("anchor-7")),
            (2, c, "mv:8", Some(8), None, "add", "a@x.com", "pending", None),
            (3, c, "cs:40", Some(9), Some(40), "delete", "c@x.com", "pending", None),
            (4, other, "mv:7", Some(7), None, "add", "b@x.com", "failed", None),
        ];
        for (id, conn, key, mv, cs, op, display, status, anchor) in rows {
            sqlx::query(
                "INSERT INTO pending_exports (id, connector_id, target_key, mv_id, cs_id, operation, object_type, \
                 display, changes, rule, status, created_anchor, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 'user', ?, ?, 'out', ?, ?, 5, 6)",
            )
            .bind(id)
            .bind(conn)
            .bind(key)
            .bind(mv)
            .bind(cs)
            .bind(op)
            .bind(display)
            .bind(&changes)
            .bind(status)
            .bind(anchor)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        // whole, in list order (connector, adds before deletes, display), on both paths
        let all = store.pending_exports(None).await.unwrap();
        assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 1, 3, 4]);
        assert_eq!(all, pooled.pending_exports(None).await.unwrap());
        assert_eq!(all[0].changes[0].new, Some(AttrValues::Reference(vec!["mv:8".into()])));
        assert_eq!(
            (all[2].cs_id, all[2].mv_id, all[1].created_anchor.as_deref()),
            (Some(40), Some(9), Some("anchor-7"))
        );
        let one = store.pending_exports(Some(other)).await.unwrap();
        assert_eq!(one.iter().map(|p| p.id).collect::<Vec<_>>(), [4]);
        // reduced as read
        let displays = store.pending_exports_each(Some(c), |p| Ok(p.display)).await.unwrap();
        assert_eq!(displays, ["a@x.com", "b@x.com", "c@x.com"]);
        // by id: what is no longer pending is absent
        let by_id = store.pending_by_ids(&[3, 1, 99]).await.unwrap();
        assert_eq!(by_id.keys().copied().collect::<std::collections::BTreeSet<_>>(), [1, 3].into());
        assert_eq!(by_id, pooled.pending_by_ids(&[3, 1, 99]).await.unwrap());
        // counted by connector, operation and status
        let counts = store.pending_counts().await.unwrap();
        let seen: Vec<(i64, &str, &str, i64)> = counts
            .iter()
            .map(|n| (n.connector_id, n.operation.as_str(), n.status.as_str(), n.count))
            .collect();
        assert_eq!(
            seen,
            [
                (c, "add", "exported", 1),
                (c, "add", "pending", 1),
                (c, "delete", "pending", 1),
                (other, "add", "failed", 1)
            ]
        );
        assert_eq!(counts, pooled.pending_counts().await.unwrap());
        // the anchors exported adds created, of this connector only
        let created = store.created_anchors(c, &[7, 8, 9]).await.unwrap();
        assert_eq!(created, [(7, "anchor-7".to_owned())].into());
        assert!(store.created_anchors(other, &[7]).await.unwrap().is_empty());
        assert_eq!(created, pooled.created_anchors(c, &[7, 8, 9]).await.unwrap());
        assert_eq!(store.pending_for_mv(7).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_corrupt_row_read_on_the_read_connection_names_its_table_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, c) = file_store(dir.path()).await;
        let run = store.start_run("full-import", Some(c), "ad", 10).await.unwrap();
        let writes = vec![upsert("a", "CN=A,DC=x", "a@x.com")];
        store.write_import_batch(c, run, writes, &[], &RunCounts::default(), None, 11).await.unwrap();
        let id = store.cs_changed_since(c, 0, 10).await.unwrap()[0].id;
        sqlx::query("UPDATE cs_objects SET attributes = '{\"cn\":' WHERE id = ?")
            .bind(id)
            .execute(&store.pool)
            .await
            .unwrap();
        match store.cs_by_ids(&[id]).await {
            Err(StoreError::Corrupt { table, key, .. }) => {
                assert_eq!((table, key), ("cs_objects", id.to_string()))
            }
            other => panic!("expected a corrupt-row error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_read_connection_cannot_write_and_a_closed_store_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, c) = file_store(dir.path()).await;
        let reader = store.reader.clone().unwrap();
        {
            let guard = reader.0.lock().unwrap();
            let conn = guard.as_ref().unwrap();
            let denied = conn.execute("DELETE FROM connectors", []);
            assert!(denied.is_err(), "query_only must refuse a write");
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM connectors", [], |r| r.get(0)).unwrap();
            assert_eq!(n, 1);
        }
        store.close().await;
        assert!(reader.0.lock().unwrap().is_none(), "close drops the read connection");
        assert!(store.cs_changed_since(c, 0, 10).await.is_err(), "a closed store answers with an error");
    }
}
