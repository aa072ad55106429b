//! The emulator's state in SQLite: directory objects as JSON documents, unique values, group members,
//! domains, admin roles and the change log behind delta tokens. Everything survives a restart.
//!
//! SQLite is called in place (rusqlite) under one mutex: an operation is a few statements of
//! microseconds each, and a hand-off to a database thread per statement cost more than the
//! statements (most of an export's time went to waking threads).
//!
//! Writes are committed in groups: each operation is a savepoint (all or nothing, as before)
//! inside a transaction that a background task commits every [`GROUP_COMMIT`], and
//! [`Store::close`] commits before its checkpoint. Committing each write rewrote the pages it
//! touched (the object, its unique values, the change log and their indexes) into the WAL once
//! per write: creating the 95,000 objects of a 100,000-object export spent most of the
//! emulator's CPU in those page writes, so the benchmark measured the emulator instead of the
//! engine. Reads share the one connection, so they see every answered write. A crash (not a
//! stop) loses at most the writes of the last interval.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::EmulatorError;

/// A JSON object as stored and served.
pub type Obj = Map<String, Value>;

/// Why a write was refused by the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
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

/// How often the background task commits the writes made since its last commit. Each commit
/// writes every page its group touched, and random ids and values touch a different leaf of each
/// index per create: with a commit every 20 ms, answering an export of 95,000 creates at 100,000
/// objects took 12.8 s of CPU; every 250 ms, 11.0 s (more creates share each leaf in a group).
pub(crate) const GROUP_COMMIT: Duration = Duration::from_millis(250);

/// The connection and the state of its group of writes.
pub(crate) struct Db {
    conn: Connection,
    /// A group transaction is open: begun by [`write`], ended by [`commit_group`].
    group_open: bool,
    /// Why the state refuses writes: a group whose writes were answered was rolled back.
    lost: Option<String>,
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The error of every write once the state has lost a group.
fn lost_error(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(format!("the emulator's state lost writes it had answered ({why}); restart the emulator")),
    )
}

/// Commits the open group of writes, if any. A failed commit that rolled the group back marks
/// the state lost (its writes were answered); one that left it open is tried again next time.
fn commit_group(db: &mut Db) -> rusqlite::Result<()> {
    if !db.group_open {
        return Ok(());
    }
    match db.conn.execute_batch("COMMIT") {
        Ok(()) => {
            db.group_open = false;
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "the emulator's state: commit failed");
            if db.conn.is_autocommit() {
                db.group_open = false;
                db.lost.get_or_insert_with(|| format!("a commit failed: {e}"));
            }
            Err(e)
        }
    }
}

/// Commits the group of writes every [`GROUP_COMMIT`] until the store is gone.
async fn commit_groups(db: Weak<Mutex<Db>>) {
    loop {
        tokio::time::sleep(GROUP_COMMIT).await;
        let Some(db) = db.upgrade() else { return };
        let _ = commit_group(&mut db.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Begins one operation's writes: a savepoint (released on commit, rolled back when dropped)
/// inside the group transaction, begun here when none is open. Refused once the state lost a
/// group: SQLite rolls a whole transaction back on some errors (I/O, a full disk), which would
/// take writes already answered with it.
fn write(db: &mut Db) -> rusqlite::Result<rusqlite::Savepoint<'_>> {
    if db.group_open && db.conn.is_autocommit() {
        db.group_open = false;
        db.lost.get_or_insert_with(|| "SQLite rolled back an open group of writes after an error".into());
    }
    if let Some(why) = &db.lost {
        tracing::error!(why = %why, "the emulator's state refuses writes");
        return Err(lost_error(why));
    }
    if db.conn.is_autocommit() {
        db.conn.execute_batch("BEGIN IMMEDIATE")?;
        db.group_open = true;
    }
    db.conn.savepoint()
}

/// The SQLite-backed state. One connection behind a mutex: every operation is serialized, which keeps
/// uniqueness checks and the change log consistent. The lock is never held across an `.await`.
pub(crate) struct Store {
    conn: Arc<Mutex<Db>>,
    /// The domains, read once (every user write checks its UPN suffix against them).
    domains: std::sync::Mutex<Option<Vec<Obj>>>,
    /// The ids changed in the last few delta windows, sorted, so that each page of a round is a
    /// binary search. See [`Store::changed_ids`].
    windows: std::sync::Mutex<Vec<ChangeWindow>>,
}

/// The distinct ids of one kind changed in the change-log window `(from, to]`, in id order. A
/// window never changes once `to` is reached (sequence numbers only grow and log rows are only
/// removed by a reset, which also clears these).
struct ChangeWindow {
    kind: Kind,
    from: i64,
    to: i64,
    ids: std::sync::Arc<Vec<String>>,
}

/// The property changes of a page of objects in a window: `json_each` of the page's ids drives the
/// join (CROSS JOIN keeps it outside), each id a search of `changes_object`, named with INDEXED BY.
/// Without it, `EXPLAIN QUERY PLAN` shows this plan in a new connection, yet an emulator that had
/// served a whole full cycle at M (100,000 objects) took 4 s a page here, against 0.02 s in a
/// process started afterwards on the same file; its stack was in table seeks of the window. The
/// cause inside SQLite was not found; naming the index made the confirming import of that cycle
/// take 18 s instead of 258 s. See `delta_queries_search_the_change_log_per_id`.
const CHANGED_PROPS_SQL: &str = "SELECT c.object_id, c.props FROM json_each(?) j \
     CROSS JOIN changes c INDEXED BY changes_object \
     WHERE c.kind = ? AND c.object_id = j.value AND c.member_id IS NULL \
     AND c.seq > ? AND c.seq <= ? ORDER BY j.key, c.seq";

/// The ids changed in a window, a range of `changes_kind` (named, as above).
const WINDOW_IDS_SQL: &str =
    "SELECT object_id FROM changes INDEXED BY changes_kind WHERE kind = ? AND seq > ? AND seq <= ?";

/// The membership changes of a page of groups in a window, as [`CHANGED_PROPS_SQL`].
const MEMBER_CHANGES_SQL: &str = "SELECT c.object_id, c.member_id, c.member_added FROM json_each(?) j \
     CROSS JOIN changes c INDEXED BY changes_object \
     WHERE c.kind = 'group' AND c.object_id = j.value AND c.member_id IS NOT NULL \
     AND c.seq > ? AND c.seq <= ? ORDER BY j.key, c.seq";

/// How many windows are kept: rounds of users and of groups, for a client or two.
const KEPT_WINDOWS: usize = 4;

/// A change of a group's membership inside a delta window: the member and whether it ends up present.
pub(crate) struct MemberChange {
    pub member_id: String,
    pub added: bool,
}

impl Drop for Store {
    /// A store dropped without [`Store::close`] (an emulator dropped without `stop`) still
    /// commits what it answered.
    fn drop(&mut self) {
        let _ = commit_group(&mut self.lock());
    }
}

impl Store {
    pub(crate) async fn open(path: Option<&Path>) -> Result<Store, EmulatorError> {
        let conn = match path {
            Some(p) => {
                let conn = Connection::open(p)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                // A group of writes stays in the page cache until its commit (SQLite's default
                // of 2 MB spilled it into the WAL mid-group), and the objects a client reads
                // back are found there.
                conn.pragma_update(None, "cache_size", -262_144)?;
                // A checkpoint every 1,000 pages (the default) came after nearly every group, each
                // copying its pages into the file and syncing it.
                conn.pragma_update(None, "wal_autocheckpoint", 50_000)?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.set_prepared_statement_cache_capacity(64);
        for stmt in SCHEMA {
            conn.execute(stmt, [])?;
        }
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)",
            [uuid::Uuid::new_v4().simple().to_string()],
        )?;
        let conn = Arc::new(Mutex::new(Db { conn, group_open: false, lost: None }));
        tokio::spawn(commit_groups(Arc::downgrade(&conn)));
        Ok(Store { conn, domains: std::sync::Mutex::new(None), windows: std::sync::Mutex::new(Vec::new()) })
    }

    /// The connection. A panic while it was held rolled back the operation's savepoint (dropped
    /// while unwinding) and left the group as it was, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Db> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits the open group (an error if it cannot, or if the state lost one before) and
    /// checkpoints.
    pub(crate) async fn close(&self) -> Result<(), rusqlite::Error> {
        let mut db = self.lock();
        commit_group(&mut db)?;
        if let Some(why) = &db.lost {
            return Err(lost_error(why));
        }
        // Checkpoint so the file alone holds everything; errors here only cost a WAL replay.
        let _ = db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(())
    }

    /// The epoch names this state's change log; a reset starts a new one and so expires every token.
    pub(crate) async fn epoch(&self) -> Result<String, rusqlite::Error> {
        self.lock().query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0))
    }

    pub(crate) async fn max_seq(&self) -> Result<i64, rusqlite::Error> {
        self.lock().query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))
    }

    pub(crate) async fn set_domains(&self, domains: &[Obj]) -> Result<(), rusqlite::Error> {
        let mut conn = self.lock();
        if let Ok(mut cached) = self.domains.lock() {
            *cached = None;
        }
        let tx = write(&mut conn)?;
        tx.execute("DELETE FROM domains", [])?;
        for d in domains {
            let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
            tx.execute(
                "INSERT INTO domains (id, data) VALUES (?, ?)",
                params![id.to_ascii_lowercase(), Value::Object(d.clone()).to_string()],
            )?;
        }
        tx.commit()?;
        // Cleared again once committed: a read that raced the write may have cached the old list.
        if let Ok(mut cached) = self.domains.lock() {
            *cached = None;
        }
        Ok(())
    }

    pub(crate) async fn domains(&self) -> Result<Vec<Obj>, rusqlite::Error> {
        if let Ok(cached) = self.domains.lock()
            && let Some(d) = cached.as_ref()
        {
            return Ok(d.clone());
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT data FROM domains ORDER BY id")?;
        let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let list: Vec<Obj> = rows.iter().filter_map(|d| parse_obj(d)).collect();
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
    ) -> Result<Vec<Obj>, rusqlite::Error> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT data FROM objects WHERE kind = ? AND id > ? ORDER BY id LIMIT ?")?;
        let rows =
            stmt.query_map(params![kind.as_str(), after.unwrap_or(""), limit], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for data in rows {
            if let Some(o) = parse_obj(&data?) {
                out.push(o);
            }
        }
        Ok(out)
    }

    pub(crate) async fn get(
        &self,
        kind: Option<Kind>,
        id: &str,
    ) -> Result<Option<(Kind, Obj)>, rusqlite::Error> {
        get_in(&self.lock(), kind, id)
    }

    /// A user by userPrincipalName (case-insensitive).
    pub(crate) async fn get_by_upn(&self, upn: &str) -> Result<Option<(Kind, Obj)>, rusqlite::Error> {
        let conn = self.lock();
        let id: Option<String> = conn
            .prepare_cached(
                "SELECT object_id FROM unique_values WHERE prop = 'userPrincipalName' AND value = ?",
            )?
            .query_row([upn.to_lowercase()], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => get_in(&conn, Some(Kind::User), &id),
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
    pub(crate) async fn put_linked(
        &self,
        kind: Kind,
        obj: &Obj,
        unique: &[(String, String)],
        members: &[String],
        new: bool,
    ) -> Result<(), OpError> {
        let id = obj.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut conn = self.lock();
        let tx = write(&mut conn)?;
        let old = if new { None } else { get_in(&tx, Some(kind), &id)?.map(|(_, o)| o) };
        let unchanged = !members.is_empty() && old.as_ref() == Some(obj);
        if !unchanged {
            put_in(&tx, kind, &id, obj, unique, old.as_ref(), new)?;
        }
        if !members.is_empty() {
            let list = json_ids(members);
            let found: std::collections::HashSet<String> = tx
                .prepare_cached("SELECT id FROM objects WHERE id IN (SELECT value FROM json_each(?))")?
                .query_map([&list], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if let Some(missing) = members.iter().find(|m| !found.contains(*m)) {
                return Err(OpError::MissingRef(missing.clone()));
            }
            if !new {
                let already: i64 = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM members WHERE group_id = ? \
                         AND member_id IN (SELECT value FROM json_each(?))",
                    )?
                    .query_row(params![id, list], |r| r.get(0))?;
                if already > 0 {
                    return Err(OpError::AlreadyMember);
                }
            }
            tx.prepare_cached(
                "INSERT OR IGNORE INTO members (group_id, member_id) SELECT ?, value FROM json_each(?)",
            )?
            .execute(params![id, list])?;
            tx.prepare_cached(
                "INSERT INTO changes (kind, object_id, member_id, member_added) \
                 SELECT 'group', ?, value, 1 FROM json_each(?) ORDER BY key",
            )?
            .execute(params![id, list])?;
        }
        tx.commit()?;
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
    ) -> Result<HashMap<String, Option<Vec<String>>>, rusqlite::Error> {
        let rows: Vec<(String, Option<String>)> = {
            let conn = self.lock();
            // The page's ids drive the join (CROSS JOIN keeps them outside), each a search of
            // (kind, object_id, seq): left to itself the planner scanned the whole window by seq
            // for every page. Rows come back per object, in seq order within it.
            let mut stmt = conn.prepare_cached(CHANGED_PROPS_SQL)?;
            stmt.query_map(params![json_ids(ids), kind.as_str(), from, to], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut out: HashMap<String, Option<Vec<String>>> =
            ids.iter().map(|id| (id.clone(), Some(Vec::new()))).collect();
        for (id, props) in rows {
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
        let mut conn = self.lock();
        let tx = write(&mut conn)?;
        let n = tx
            .prepare_cached("DELETE FROM objects WHERE id = ? AND kind = ?")?
            .execute(params![id, kind.as_str()])?;
        if n == 0 {
            return Err(OpError::NotFound);
        }
        tx.prepare_cached("DELETE FROM unique_values WHERE object_id = ?")?.execute([id])?;
        let groups: Vec<String> = tx
            .prepare_cached("SELECT group_id FROM members WHERE member_id = ? ORDER BY group_id")?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for g in &groups {
            log_change(&tx, Kind::Group, g, Some((id, false)))?;
        }
        tx.prepare_cached("DELETE FROM members WHERE member_id = ? OR group_id = ?")?
            .execute(params![id, id])?;
        tx.prepare_cached("DELETE FROM admin_roles WHERE user_id = ?")?.execute([id])?;
        log_change(&tx, kind, id, None)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) async fn add_member(&self, group_id: &str, member_id: &str) -> Result<(), OpError> {
        let mut conn = self.lock();
        let tx = write(&mut conn)?;
        if get_in(&tx, Some(Kind::Group), group_id)?.is_none() {
            return Err(OpError::NotFound);
        }
        if get_in(&tx, None, member_id)?.is_none() {
            return Err(OpError::NotFound);
        }
        let n = tx
            .prepare_cached("INSERT OR IGNORE INTO members (group_id, member_id) VALUES (?, ?)")?
            .execute(params![group_id, member_id])?;
        if n == 0 {
            return Err(OpError::AlreadyMember);
        }
        log_change(&tx, Kind::Group, group_id, Some((member_id, true)))?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) async fn remove_member(&self, group_id: &str, member_id: &str) -> Result<(), OpError> {
        let mut conn = self.lock();
        let tx = write(&mut conn)?;
        let n = tx
            .prepare_cached("DELETE FROM members WHERE group_id = ? AND member_id = ?")?
            .execute(params![group_id, member_id])?;
        if n == 0 {
            return Err(OpError::NotFound);
        }
        log_change(&tx, Kind::Group, group_id, Some((member_id, false)))?;
        tx.commit()?;
        Ok(())
    }

    /// Members of a group with their kinds, in id order: at most `limit`, those after the id
    /// `after` when given (a page).
    pub(crate) async fn members(
        &self,
        group_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Kind, Obj)>, rusqlite::Error> {
        let rows: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT o.kind, o.data FROM members m JOIN objects o ON o.id = m.member_id \
                 WHERE m.group_id = ?1 AND (?2 IS NULL OR m.member_id > ?2) ORDER BY m.member_id LIMIT ?3",
            )?;
            stmt.query_map(params![group_id, after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        Ok(rows.iter().filter_map(|(k, d)| Some((Kind::from_db(k)?, parse_obj(d)?))).collect())
    }

    /// Ids of objects of `kind` changed in the change-log window `(from, to]`, in id order, after
    /// `after`, at most `limit`.
    ///
    /// A round's pages all ask about the same window, so its ids are listed once (a range scan of
    /// `(kind, seq)`, sorted here) and kept; a page is then a binary search. Asked of SQLite page
    /// by page, the planner walked `(kind, object_id, seq)` from `after` and filtered by seq: cheap
    /// when the window is most of the log, but a walk of the whole log to answer a round with
    /// nothing changed (0.07 to 0.12 s on a warm cache at 1,000,000 objects; R4 at that size, on a
    /// cold cache, spent 12 s in its cloud import).
    pub(crate) async fn changed_ids(
        &self,
        kind: Kind,
        from: i64,
        to: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, rusqlite::Error> {
        let limit = usize::try_from(limit).unwrap_or(0);
        let ids = self.window_ids(kind, from, to, limit)?;
        let start = match after {
            Some(a) => ids.partition_point(|id| id.as_str() <= a),
            None => 0,
        };
        Ok(ids.iter().skip(start).take(limit).cloned().collect())
    }

    /// The sorted, distinct ids of the window, listed once per round: a round that fits in one page
    /// (`limit` ids or fewer) is not kept, a kept one moves to the end on use and the least recently
    /// used goes first. The listing and its keeping happen under the connection's lock, as a reset
    /// clears the kept windows under it, so no window of an older log is kept after a reset.
    fn window_ids(
        &self,
        kind: Kind,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<std::sync::Arc<Vec<String>>, rusqlite::Error> {
        let kept = |w: &ChangeWindow| w.kind == kind && w.from == from && w.to == to;
        {
            let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = windows.iter().position(kept) {
                let w = windows.remove(i);
                let ids = w.ids.clone();
                windows.push(w);
                return Ok(ids);
            }
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(WINDOW_IDS_SQL)?;
        let mut ids: Vec<String> =
            stmt.query_map(params![kind.as_str(), from, to], |r| r.get(0))?.collect::<Result<_, _>>()?;
        ids.sort_unstable();
        ids.dedup();
        let ids = std::sync::Arc::new(ids);
        if ids.len() > limit {
            let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            windows.retain(|w| !kept(w));
            if windows.len() >= KEPT_WINDOWS {
                windows.remove(0);
            }
            windows.push(ChangeWindow { kind, from, to, ids: ids.clone() });
        }
        Ok(ids)
    }

    /// Net membership changes in the window `(from, to]` of each of `group_ids` (one query for
    /// a delta page), each group's in member id order.
    pub(crate) async fn member_changes_many(
        &self,
        group_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, Vec<MemberChange>>, rusqlite::Error> {
        // The last change of each member wins (rows come in change order).
        let mut last: HashMap<String, BTreeMap<String, bool>> = HashMap::new();
        {
            let conn = self.lock();
            // As in `changed_props_many`: one index search per group of the page, not a scan
            // of the window (a round of 100,000 groups over 1.6 million membership changes took
            // 347 s with the scan, 31 s so); the last change of a member is the last in seq order
            // within its group.
            let mut stmt = conn.prepare_cached(MEMBER_CHANGES_SQL)?;
            let mut rows = stmt.query(params![json_ids(group_ids), from, to])?;
            while let Some(r) = rows.next()? {
                let added: i64 = r.get(2)?;
                last.entry(r.get(0)?).or_default().insert(r.get(1)?, added != 0);
            }
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
    ) -> Result<HashMap<String, Vec<(Kind, String)>>, rusqlite::Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT m.group_id, m.member_id, o.kind FROM members m JOIN objects o ON o.id = m.member_id \
             WHERE m.group_id IN (SELECT value FROM json_each(?)) ORDER BY m.group_id, m.member_id",
        )?;
        let mut rows = stmt.query([json_ids(group_ids)])?;
        let mut out: HashMap<String, Vec<(Kind, String)>> = HashMap::new();
        while let Some(r) = rows.next()? {
            let kind: String = r.get(2)?;
            if let Some(k) = Kind::from_db(&kind) {
                out.entry(r.get(0)?).or_default().push((k, r.get(1)?));
            }
        }
        Ok(out)
    }

    /// Objects by id, of any kind (one query for a delta page); ids not found are left out.
    pub(crate) async fn get_many(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, (Kind, Obj)>, rusqlite::Error> {
        let rows: Vec<(String, String, String)> = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT id, kind, data FROM objects WHERE id IN (SELECT value FROM json_each(?))",
            )?;
            stmt.query_map([json_ids(ids)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, k, d)| Some((id, (Kind::from_db(&k)?, parse_obj(&d)?))))
            .collect())
    }

    /// The kinds of objects by id (ids not found are left out), without reading their data.
    pub(crate) async fn kinds_of(&self, ids: &[String]) -> Result<HashMap<String, Kind>, rusqlite::Error> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT id, kind FROM objects WHERE id IN (SELECT value FROM json_each(?))")?;
        let mut rows = stmt.query([json_ids(ids)])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            let kind: String = r.get(1)?;
            if let Some(k) = Kind::from_db(&kind) {
                out.insert(r.get(0)?, k);
            }
        }
        Ok(out)
    }

    pub(crate) async fn reset(&self) -> Result<(), rusqlite::Error> {
        let mut conn = self.lock();
        let tx = write(&mut conn)?;
        for t in ["objects", "unique_values", "members", "changes", "admin_roles"] {
            tx.execute(&format!("DELETE FROM {t}"), [])?;
        }
        tx.execute(
            "UPDATE meta SET value = ? WHERE key = 'epoch'",
            [uuid::Uuid::new_v4().simple().to_string()],
        )?;
        tx.commit()?;
        // Still under the connection's lock, which `window_ids` holds while it lists and keeps one.
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        Ok(())
    }

    pub(crate) async fn add_admin_role(&self, role: &str, user_id: &str) -> Result<(), OpError> {
        let conn = self.lock();
        if get_in(&conn, Some(Kind::User), user_id)?.is_none() {
            return Err(OpError::NotFound);
        }
        conn.prepare_cached("INSERT OR IGNORE INTO admin_roles (role, user_id) VALUES (?, ?)")?
            .execute(params![role, user_id])?;
        Ok(())
    }

    /// (role, user ids) in role order.
    pub(crate) async fn admin_roles(&self) -> Result<Vec<(String, Vec<String>)>, rusqlite::Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT role, user_id FROM admin_roles ORDER BY role, user_id")?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        while let Some(r) = rows.next()? {
            let role: String = r.get(0)?;
            let user: String = r.get(1)?;
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
fn put_in(
    conn: &Connection,
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
        let mut stmt = conn.prepare_cached(&sql)?;
        let binds = unique.iter().flat_map(|(p, v)| [p.as_str(), v.as_str()]).chain([id]);
        let taken: Vec<(String, String)> = stmt
            .query_map(params_from_iter(binds), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
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
        conn.prepare_cached("DELETE FROM unique_values WHERE object_id = ?")?.execute([id])?;
    }
    if !unique.is_empty() {
        let rows = vec!["(?, ?, ?)"; unique.len()].join(", ");
        let sql = format!("INSERT OR REPLACE INTO unique_values (prop, value, object_id) VALUES {rows}");
        let binds = unique.iter().flat_map(|(p, v)| [p.as_str(), v.as_str(), id]);
        conn.prepare_cached(&sql)?.execute(params_from_iter(binds))?;
    }
    let data = serde_json::to_string(obj).unwrap_or_default();
    conn.prepare_cached("INSERT OR REPLACE INTO objects (id, kind, data) VALUES (?, ?, ?)")?
        .execute(params![id, kind.as_str(), data])?;
    conn.prepare_cached(
        "INSERT INTO changes (kind, object_id, member_id, member_added, props) VALUES (?, ?, NULL, NULL, ?)",
    )?
    .execute(params![kind.as_str(), id, props])?;
    Ok(())
}

fn get_in(conn: &Connection, kind: Option<Kind>, id: &str) -> Result<Option<(Kind, Obj)>, rusqlite::Error> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT kind, data FROM objects WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(k, data)| {
        let k = Kind::from_db(&k)?;
        if kind.is_some_and(|want| want != k) {
            return None;
        }
        Some((k, parse_obj(&data)?))
    }))
}

fn log_change(
    conn: &Connection,
    kind: Kind,
    id: &str,
    member: Option<(&str, bool)>,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO changes (kind, object_id, member_id, member_added) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![kind.as_str(), id, member.map(|m| m.0), member.map(|m| i64::from(m.1))])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite (the bundled version, not the system's) makes for a query, one line per step.
    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    /// Rows of `table` with this id, as another connection to the state file sees them.
    fn visible(other: &Connection, table: &str, column: &str, id: &str) -> i64 {
        other
            .query_row(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?"), [id], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn writes_are_committed_in_groups_and_each_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant.db");
        let store = Store::open(Some(&path)).await.unwrap();
        let object = |id: &str| {
            let mut o = Obj::new();
            o.insert("id".into(), Value::String(id.into()));
            o
        };
        let upn = vec![("userPrincipalName".to_owned(), "a@contoso.com".to_owned())];
        store.put(Kind::User, &object("u1"), &upn).await.unwrap();
        let other = Connection::open(&path).unwrap();
        // Not committed yet: the committer has not run (nothing here has yielded to it).
        assert_eq!(visible(&other, "objects", "id", "u1"), 0);
        // In the same group: a group whose member does not exist is refused whole, and a user
        // whose UPN is taken too; neither undoes the first write.
        let refused = store.put_linked(Kind::Group, &object("g1"), &[], &["missing".into()], true).await;
        assert!(matches!(refused, Err(OpError::MissingRef(m)) if m == "missing"));
        let taken = store.put(Kind::User, &object("u2"), &upn).await;
        assert!(matches!(taken, Err(OpError::Conflict(p)) if p == "userPrincipalName"));
        // Another connection sees the first write once its group is committed, without a stop.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while visible(&other, "objects", "id", "u1") == 0 {
            assert!(std::time::Instant::now() < deadline, "u1 was never committed");
            tokio::time::sleep(GROUP_COMMIT).await;
        }
        assert_eq!(visible(&other, "unique_values", "object_id", "u1"), 1);
        for id in ["g1", "u2"] {
            assert_eq!(visible(&other, "objects", "id", id), 0, "{id}");
            assert_eq!(visible(&other, "changes", "object_id", id), 0, "{id}");
        }
        // A write just before the stop is in the file after it.
        store.put(Kind::User, &object("u3"), &[]).await.unwrap();
        store.close().await.unwrap();
        assert_eq!(visible(&other, "objects", "id", "u3"), 1);
    }

    #[test]
    fn delta_queries_search_the_change_log_per_id() {
        let conn = Connection::open_in_memory().unwrap();
        for stmt in SCHEMA {
            conn.execute(stmt, []).unwrap();
        }
        let props = plan(&conn, CHANGED_PROPS_SQL, params![r#"["a","b"]"#, "user", 0, 10]);
        let members = plan(&conn, MEMBER_CHANGES_SQL, params![r#"["a","b"]"#, 0, 10]);
        for (name, p) in [("props", &props), ("members", &members)] {
            assert!(
                p.contains("SEARCH c USING INDEX changes_object (kind=? AND object_id=?"),
                "{name}:\n{p}"
            );
            let (Some(outer), Some(inner)) = (p.find("SCAN j"), p.find("SEARCH c")) else {
                panic!("{name}: a step is missing:\n{p}");
            };
            assert!(outer < inner, "{name}: the page's ids are the outer loop:\n{p}");
        }
        let window = plan(&conn, WINDOW_IDS_SQL, params!["user", 0, 10]);
        assert!(
            window.contains("SEARCH changes USING INDEX changes_kind (kind=? AND seq>? AND seq<?)"),
            "{window}"
        );
    }
}
