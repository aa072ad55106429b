//! The emulator's state in SQLite: directory objects as JSON documents, unique values, group members,
//! domains, admin roles and the change log behind delta tokens. Everything survives a restart.

use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use tokio::sync::Mutex;

use crate::EmulatorError;

/// A JSON object as stored and served.
pub type Obj = Map<String, Value>;

/// Why a write was refused by the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("another object with the same value for property {0} already exists")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("already a member")]
    AlreadyMember,
    #[error("the referenced object {0} does not exist")]
    MissingRef(String),
}

/// Object kinds kept in the `objects` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `microsoft.graph.user`
    User,
    /// `microsoft.graph.group`
    Group,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }
    pub(crate) fn from_db(s: &str) -> Option<Kind> {
        match s {
            "user" => Some(Kind::User),
            "group" => Some(Kind::Group),
            _ => None,
        }
    }
    /// The OData type name, as in `@odata.type`.
    pub(crate) fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
        }
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, kind TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS objects_kind ON objects (kind, id)",
    "CREATE TABLE IF NOT EXISTS unique_values (prop TEXT NOT NULL, value TEXT NOT NULL, object_id TEXT NOT NULL, PRIMARY KEY (prop, value))",
    "CREATE INDEX IF NOT EXISTS unique_values_object ON unique_values (object_id)",
    "CREATE TABLE IF NOT EXISTS members (group_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (group_id, member_id))",
    "CREATE INDEX IF NOT EXISTS members_member ON members (member_id)",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, object_id TEXT NOT NULL, member_id TEXT, member_added INTEGER, props TEXT)",
    "CREATE INDEX IF NOT EXISTS changes_kind ON changes (kind, seq)",
    // A delta round's pages walk the changed objects in id order: without this index each page
    // re-read and re-sorted the whole window (quadratic in the objects changed: 195 s for the
    // confirming import of 95,000 new objects).
    "CREATE INDEX IF NOT EXISTS changes_object ON changes (kind, object_id, seq)",
    "CREATE TABLE IF NOT EXISTS domains (id TEXT PRIMARY KEY, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS admin_roles (role TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (role, user_id))",
];

/// The SQLite-backed state. One connection behind a mutex: every operation is serialized, which keeps
/// uniqueness checks and the change log consistent.
pub(crate) struct Store {
    conn: Mutex<SqliteConnection>,
    /// The domains, read once (every user write checks its UPN suffix against them).
    domains: std::sync::Mutex<Option<Vec<Obj>>>,
}

/// A change of a group's membership inside a delta window: the member and whether it ends up present.
pub(crate) struct MemberChange {
    pub member_id: String,
    pub added: bool,
}

impl Store {
    pub(crate) async fn open(path: Option<&Path>) -> Result<Store, EmulatorError> {
        let opts = match path {
            Some(p) => SqliteConnectOptions::new()
                .filename(p)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
            None => SqliteConnectOptions::from_str("sqlite::memory:")?,
        };
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&mut conn).await?;
        }
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .execute(&mut conn)
            .await?;
        Ok(Store { conn: Mutex::new(conn), domains: std::sync::Mutex::new(None) })
    }

    pub(crate) async fn close(&self) {
        let mut conn = self.conn.lock().await;
        // Checkpoint so the file alone holds everything; errors here only cost a WAL replay.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await;
    }

    /// The epoch names this state's change log; a reset starts a new one and so expires every token.
    pub(crate) async fn epoch(&self) -> Result<String, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'").fetch_one(&mut *conn).await
    }

    pub(crate) async fn max_seq(&self) -> Result<i64, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes").fetch_one(&mut *conn).await
    }

    pub(crate) async fn set_domains(&self, domains: &[Obj]) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.lock().await;
        if let Ok(mut cached) = self.domains.lock() {
            *cached = None;
        }
        let mut tx = conn.begin().await?;
        sqlx::query("DELETE FROM domains").execute(&mut *tx).await?;
        for d in domains {
            let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
            sqlx::query("INSERT INTO domains (id, data) VALUES (?, ?)")
                .bind(id.to_ascii_lowercase())
                .bind(Value::Object(d.clone()).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // Cleared again once committed: a read that raced the write may have cached the old list.
        if let Ok(mut cached) = self.domains.lock() {
            *cached = None;
        }
        Ok(())
    }

    pub(crate) async fn domains(&self) -> Result<Vec<Obj>, sqlx::Error> {
        if let Ok(cached) = self.domains.lock()
            && let Some(d) = cached.as_ref()
        {
            return Ok(d.clone());
        }
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query("SELECT data FROM domains ORDER BY id").fetch_all(&mut *conn).await?;
        let list: Vec<Obj> = rows.iter().filter_map(|r| parse_obj(r.get("data"))).collect();
        if let Ok(mut cached) = self.domains.lock() {
            *cached = Some(list.clone());
        }
        Ok(list)
    }

    /// Objects of one kind in id order, after `after`, at most `limit`.
    pub(crate) async fn list(
        &self,
        kind: Kind,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Obj>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query("SELECT data FROM objects WHERE kind = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(kind.as_str())
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.iter().filter_map(|r| parse_obj(r.get("data"))).collect())
    }

    pub(crate) async fn get(&self, kind: Option<Kind>, id: &str) -> Result<Option<(Kind, Obj)>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        get_in(&mut conn, kind, id).await
    }

    /// A user by userPrincipalName (case-insensitive).
    pub(crate) async fn get_by_upn(&self, upn: &str) -> Result<Option<(Kind, Obj)>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let id: Option<String> = sqlx::query_scalar(
            "SELECT object_id FROM unique_values WHERE prop = 'userPrincipalName' AND value = ?",
        )
        .bind(upn.to_lowercase())
        .fetch_optional(&mut *conn)
        .await?;
        match id {
            Some(id) => get_in(&mut conn, Some(Kind::User), &id).await,
            None => Ok(None),
        }
    }

    /// Inserts or replaces an object after checking its unique values against every other object, and
    /// logs the change (with the changed property names when the object existed).
    pub(crate) async fn put(
        &self,
        kind: Kind,
        obj: &Obj,
        unique: &[(String, String)],
    ) -> Result<(), OpError> {
        self.put_linked(kind, obj, unique, &[], false).await
    }

    /// [`Store::put`] of a group that also adds `members` to it, all or nothing: a member that
    /// does not exist ([`OpError::MissingRef`]) or is one already ([`OpError::AlreadyMember`])
    /// refuses the whole write. When the object itself is unchanged only the members are written.
    /// `new`: the object was just given its id (a create), so there is nothing to replace.
    ///
    /// Each statement is a round trip to SQLite's worker thread, so the statements are few and
    /// take many rows at once (the write path of an export is a few per request).
    pub(crate) async fn put_linked(
        &self,
        kind: Kind,
        obj: &Obj,
        unique: &[(String, String)],
        members: &[String],
        new: bool,
    ) -> Result<(), OpError> {
        let id = obj.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut conn = self.conn.lock().await;
        let mut tx = conn.begin().await?;
        let old = if new { None } else { get_in(&mut tx, Some(kind), &id).await?.map(|(_, o)| o) };
        let unchanged = !members.is_empty() && old.as_ref() == Some(obj);
        if !unchanged {
            put_in(&mut tx, kind, &id, obj, unique, old.as_ref(), new).await?;
        }
        if !members.is_empty() {
            let marks = vec!["?"; members.len()].join(", ");
            let sql = format!("SELECT id FROM objects WHERE id IN ({marks})");
            let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for m in members {
                q = q.bind(m);
            }
            let found: std::collections::HashSet<String> = q.fetch_all(&mut *tx).await?.into_iter().collect();
            if let Some(missing) = members.iter().find(|m| !found.contains(*m)) {
                return Err(OpError::MissingRef(missing.clone()));
            }
            if !new {
                let sql =
                    format!("SELECT COUNT(*) FROM members WHERE group_id = ? AND member_id IN ({marks})");
                let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(&id);
                for m in members {
                    q = q.bind(m);
                }
                if q.fetch_one(&mut *tx).await? > 0 {
                    return Err(OpError::AlreadyMember);
                }
            }
            let rows = vec!["(?, ?)"; members.len()].join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT OR IGNORE INTO members (group_id, member_id) VALUES {rows}"
            )));
            for m in members {
                q = q.bind(&id).bind(m);
            }
            q.execute(&mut *tx).await?;
            let rows = vec!["('group', ?, ?, 1)"; members.len()].join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO changes (kind, object_id, member_id, member_added) VALUES {rows}"
            )));
            for m in members {
                q = q.bind(&id).bind(m);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Properties changed in the window `(from, to]` of each of `ids` (one query for a delta
    /// page): `None` for an object created there (or whose changes are not known property by
    /// property), an empty list for one whose only changes were to its members.
    pub(crate) async fn changed_props_many(
        &self,
        kind: Kind,
        ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, Option<Vec<String>>>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query(
            "SELECT object_id, props FROM changes WHERE kind = ? \
             AND object_id IN (SELECT value FROM json_each(?)) AND member_id IS NULL \
             AND seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(kind.as_str())
        .bind(json_ids(ids))
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        let mut out: HashMap<String, Option<Vec<String>>> =
            ids.iter().map(|id| (id.clone(), Some(Vec::new()))).collect();
        for r in rows {
            let id: String = r.get("object_id");
            let props: Option<String> = r.get("props");
            let list = props.and_then(|p| serde_json::from_str::<Vec<String>>(&p).ok());
            let entry = out.entry(id).or_insert_with(|| Some(Vec::new()));
            match (entry.as_mut(), list) {
                (Some(have), Some(list)) => have.extend(list),
                _ => *entry = None,
            }
        }
        for list in out.values_mut().flatten() {
            list.sort_unstable();
            list.dedup();
        }
        Ok(out)
    }

    /// Deletes an object, its unique values and its memberships (logging the member removals).
    pub(crate) async fn delete(&self, kind: Kind, id: &str) -> Result<(), OpError> {
        let mut conn = self.conn.lock().await;
        let mut tx = conn.begin().await?;
        let n = sqlx::query("DELETE FROM objects WHERE id = ? AND kind = ?")
            .bind(id)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(OpError::NotFound);
        }
        sqlx::query("DELETE FROM unique_values WHERE object_id = ?").bind(id).execute(&mut *tx).await?;
        let groups: Vec<String> =
            sqlx::query_scalar("SELECT group_id FROM members WHERE member_id = ? ORDER BY group_id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for g in &groups {
            log_change(&mut tx, Kind::Group, g, Some((id, false))).await?;
        }
        sqlx::query("DELETE FROM members WHERE member_id = ? OR group_id = ?")
            .bind(id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM admin_roles WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
        log_change(&mut tx, kind, id, None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn add_member(&self, group_id: &str, member_id: &str) -> Result<(), OpError> {
        let mut conn = self.conn.lock().await;
        let mut tx = conn.begin().await?;
        if get_in(&mut tx, Some(Kind::Group), group_id).await?.is_none() {
            return Err(OpError::NotFound);
        }
        if get_in(&mut tx, None, member_id).await?.is_none() {
            return Err(OpError::NotFound);
        }
        let n = sqlx::query("INSERT OR IGNORE INTO members (group_id, member_id) VALUES (?, ?)")
            .bind(group_id)
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(OpError::AlreadyMember);
        }
        log_change(&mut tx, Kind::Group, group_id, Some((member_id, true))).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn remove_member(&self, group_id: &str, member_id: &str) -> Result<(), OpError> {
        let mut conn = self.conn.lock().await;
        let mut tx = conn.begin().await?;
        let n = sqlx::query("DELETE FROM members WHERE group_id = ? AND member_id = ?")
            .bind(group_id)
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(OpError::NotFound);
        }
        log_change(&mut tx, Kind::Group, group_id, Some((member_id, false))).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Members of a group with their kinds, in id order.
    pub(crate) async fn members(&self, group_id: &str) -> Result<Vec<(Kind, Obj)>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query(
            "SELECT o.kind, o.data FROM members m JOIN objects o ON o.id = m.member_id \
             WHERE m.group_id = ? ORDER BY o.id",
        )
        .bind(group_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((Kind::from_db(r.get("kind"))?, parse_obj(r.get("data"))?)))
            .collect())
    }

    /// Ids of objects of `kind` changed in the change-log window `(from, to]`, in id order, after `after`.
    pub(crate) async fn changed_ids(
        &self,
        kind: Kind,
        from: i64,
        to: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        sqlx::query_scalar(
            "SELECT DISTINCT object_id FROM changes WHERE kind = ? AND seq > ? AND seq <= ? \
             AND object_id > ? ORDER BY object_id LIMIT ?",
        )
        .bind(kind.as_str())
        .bind(from)
        .bind(to)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
    }

    /// Net membership changes in the window `(from, to]` of each of `group_ids` (one query for
    /// a delta page), each group's in member id order.
    pub(crate) async fn member_changes_many(
        &self,
        group_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, Vec<MemberChange>>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query(
            "SELECT object_id, member_id, member_added FROM changes WHERE kind = 'group' \
             AND object_id IN (SELECT value FROM json_each(?)) AND member_id IS NOT NULL \
             AND seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(json_ids(group_ids))
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        // The last change of each member wins (rows come in change order).
        let mut last: HashMap<String, BTreeMap<String, bool>> = HashMap::new();
        for r in rows {
            let added: i64 = r.get("member_added");
            last.entry(r.get("object_id")).or_default().insert(r.get("member_id"), added != 0);
        }
        Ok(last
            .into_iter()
            .map(|(g, m)| {
                (g, m.into_iter().map(|(member_id, added)| MemberChange { member_id, added }).collect())
            })
            .collect())
    }

    /// The members (kind and id) of each of `group_ids`, in member id order (one query for a
    /// delta page).
    pub(crate) async fn member_ids_many(
        &self,
        group_ids: &[String],
    ) -> Result<HashMap<String, Vec<(Kind, String)>>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query(
            "SELECT m.group_id, m.member_id, o.kind FROM members m JOIN objects o ON o.id = m.member_id \
             WHERE m.group_id IN (SELECT value FROM json_each(?)) ORDER BY m.group_id, m.member_id",
        )
        .bind(json_ids(group_ids))
        .fetch_all(&mut *conn)
        .await?;
        let mut out: HashMap<String, Vec<(Kind, String)>> = HashMap::new();
        for r in rows {
            if let Some(k) = Kind::from_db(r.get("kind")) {
                out.entry(r.get("group_id")).or_default().push((k, r.get("member_id")));
            }
        }
        Ok(out)
    }

    /// Objects by id, of any kind (one query for a delta page); ids not found are left out.
    pub(crate) async fn get_many(&self, ids: &[String]) -> Result<HashMap<String, (Kind, Obj)>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows =
            sqlx::query("SELECT id, kind, data FROM objects WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json_ids(ids))
                .fetch_all(&mut *conn)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get("id"), (Kind::from_db(r.get("kind"))?, parse_obj(r.get("data"))?))))
            .collect())
    }

    /// The kinds of objects by id (ids not found are left out), without reading their data.
    pub(crate) async fn kinds_of(&self, ids: &[String]) -> Result<HashMap<String, Kind>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query("SELECT id, kind FROM objects WHERE id IN (SELECT value FROM json_each(?))")
            .bind(json_ids(ids))
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.iter().filter_map(|r| Some((r.get("id"), Kind::from_db(r.get("kind"))?))).collect())
    }

    pub(crate) async fn reset(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let mut tx = conn.begin().await?;
        for t in ["objects", "unique_values", "members", "changes", "admin_roles"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}"))).execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE meta SET value = ? WHERE key = 'epoch'")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub(crate) async fn add_admin_role(&self, role: &str, user_id: &str) -> Result<(), OpError> {
        let mut conn = self.conn.lock().await;
        if get_in(&mut conn, Some(Kind::User), user_id).await?.is_none() {
            return Err(OpError::NotFound);
        }
        sqlx::query("INSERT OR IGNORE INTO admin_roles (role, user_id) VALUES (?, ?)")
            .bind(role)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// (role, user ids) in role order.
    pub(crate) async fn admin_roles(&self) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query("SELECT role, user_id FROM admin_roles ORDER BY role, user_id")
            .fetch_all(&mut *conn)
            .await?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in rows {
            let role: String = r.get("role");
            let user: String = r.get("user_id");
            match out.last_mut() {
                Some((last, users)) if *last == role => users.push(user),
                _ => out.push((role, vec![user])),
            }
        }
        Ok(out)
    }
}

/// Writes an object and its unique values after checking them against every other object, and logs
/// the change (with the changed property names when the object existed). `old`: the object as it
/// was; `new`: it did not exist (nothing to replace).
async fn put_in(
    conn: &mut SqliteConnection,
    kind: Kind,
    id: &str,
    obj: &Obj,
    unique: &[(String, String)],
    old: Option<&Obj>,
    new: bool,
) -> Result<(), OpError> {
    if !unique.is_empty() {
        let pairs = vec!["(prop = ? AND value = ?)"; unique.len()].join(" OR ");
        let sql = format!("SELECT prop, value FROM unique_values WHERE ({pairs}) AND object_id <> ?");
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for (prop, value) in unique {
            q = q.bind(prop).bind(value);
        }
        let taken = q.bind(id).fetch_all(&mut *conn).await?;
        // The first of the object's values that another object holds.
        if let Some((prop, _)) = unique.iter().find(|u| taken.contains(u)) {
            return Err(OpError::Conflict(prop.clone()));
        }
    }
    let props = old.map(|o| {
        let mut changed: Vec<&str> = obj
            .iter()
            .filter(|(k, v)| o.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .chain(o.keys().filter(|k| !obj.contains_key(*k)).map(String::as_str))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        serde_json::to_string(&changed).unwrap_or_default()
    });
    if !new {
        sqlx::query("DELETE FROM unique_values WHERE object_id = ?").bind(id).execute(&mut *conn).await?;
    }
    if !unique.is_empty() {
        let rows = vec!["(?, ?, ?)"; unique.len()].join(", ");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT OR REPLACE INTO unique_values (prop, value, object_id) VALUES {rows}"
        )));
        for (prop, value) in unique {
            q = q.bind(prop).bind(value).bind(id);
        }
        q.execute(&mut *conn).await?;
    }
    let data = serde_json::to_string(obj).unwrap_or_default();
    sqlx::query("INSERT OR REPLACE INTO objects (id, kind, data) VALUES (?, ?, ?)")
        .bind(id)
        .bind(kind.as_str())
        .bind(data)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO changes (kind, object_id, member_id, member_added, props) VALUES (?, ?, NULL, NULL, ?)",
    )
    .bind(kind.as_str())
    .bind(id)
    .bind(props)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn get_in(
    conn: &mut SqliteConnection,
    kind: Option<Kind>,
    id: &str,
) -> Result<Option<(Kind, Obj)>, sqlx::Error> {
    let row = sqlx::query("SELECT kind, data FROM objects WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.and_then(|r| {
        let k = Kind::from_db(r.get("kind"))?;
        if kind.is_some_and(|want| want != k) {
            return None;
        }
        Some((k, parse_obj(r.get("data"))?))
    }))
}

async fn log_change(
    conn: &mut SqliteConnection,
    kind: Kind,
    id: &str,
    member: Option<(&str, bool)>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO changes (kind, object_id, member_id, member_added) VALUES (?, ?, ?, ?)")
        .bind(kind.as_str())
        .bind(id)
        .bind(member.map(|m| m.0))
        .bind(member.map(|m| i64::from(m.1)))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A list of ids as the JSON array that `json_each(?)` walks.
fn json_ids(ids: &[String]) -> String {
    Value::Array(ids.iter().map(|i| Value::String(i.clone())).collect()).to_string()
}

fn parse_obj(s: &str) -> Option<Obj> {
    match serde_json::from_str(s) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}
