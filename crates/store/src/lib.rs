//! # syncctl-store: the metaverse database
//!
//! Owns the SQLite file (through sqlx, WAL mode, one writer; the sync's bulk reads on a read-only
//! connection of their own, called in place, see `reader.rs`; the log's checkpoints on a thread of
//! their own, see `checkpointer.rs`) and every table in it: connectors,
//! connector spaces (one [`StoredCsObject`] per anchor), watermarks, run history, the
//! metaverse ([`MvObject`], [`MvLink`], join keys, [`PendingExport`], [`SyncMark`]), and the
//! workflow state (set membership, [`RequestRecord`]s, the mail outbox of [`OutboxMessage`]s
//! and their [`MailAttempt`]s). Schema
//! changes are the SQL files in `migrations/`, applied by [`Store::open`].
//!
//! Main types: [`Store`] (the handle), [`CsWrite`] (one change to a connector space, written in
//! sorted batches by [`Store::write_import_batch`]), [`RunRecord`] and [`RunCounts`].
//!
//! It must not decide anything: what changed, what to write and which status a run ends with are
//! the engine's decisions. It must not store secrets.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod checkpointer;
mod connector_space;
mod error;
mod metaverse;
mod reader;
mod runs;
mod service;
mod watermark;
mod workflow;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use connector_space::{CsIndexEntry, CsLookup, CsWrite, StoredCsObject};
pub use error::{Result, StoreError};
pub use metaverse::{
    AttrProvenance, AttributeChange, CsId, CsJoinKeys, ExportApproval, ExportOperation, ExportResultRow,
    JoinKeys, LinkHow, MvId, MvLink, MvObject, MvWrite, PendingCount, PendingExport, SyncBatch, SyncCsObject,
    SyncMark,
};
pub use runs::{RunCounts, RunError, RunRecord, RunStatus, Severity};
pub use service::{AssessSummary, RuleFindings};
pub use watermark::StoredWatermark;
pub use workflow::{
    AttemptOutcome, MailAttempt, MailStatus, NewMessage, NewRequest, OutboxMessage, REQUEST_STATUSES,
    RequestFilter, RequestRecord, Transition, WorkflowWrites,
};

/// The page cache of each connection (`PRAGMA cache_size`, negative: in KiB), 8 MB. In WAL
/// mode a connection drops its whole cache when it finds that another connection committed,
/// which the writer does after every import or sync batch, so a larger cache seldom outlives a
/// batch. Measured at 100,000 objects against 16 MB: the same run times (a full sync without
/// re-import, a full import), and 25-30 MB less peak RSS over a whole cycle.
pub(crate) const CACHE_SIZE_PRAGMA: &str = "-8192";

/// The writer's own checkpoint, a backstop only (`PRAGMA wal_autocheckpoint`, in pages): the
/// checkpoint thread (`checkpointer.rs`) copies the log while the writer goes on, and the writer
/// stops to copy it only if the log reaches 40,000 pages (160 MB). A store in memory has no log.
/// Before the thread, the writer checkpointed every 10,000 pages rather than SQLite's 1,000 (a
/// bulk import or sync rewrites the same index pages batch after batch, and each checkpoint
/// copied them into the database file again: a full import at 100,000 objects took 9.3 s with
/// 1,000, 7.0 s with 10,000).
const WAL_AUTOCHECKPOINT_PAGES: &str = "40000";

/// A connector's row id.
pub type ConnectorId = i64;
/// A run's row id.
pub type RunId = i64;

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    location: String,
    /// The database file (`None` in memory), for the run lock beside it.
    path: Option<std::path::PathBuf>,
    /// The read connection of the file (`None` in memory): see `reader.rs`.
    reader: Option<std::sync::Arc<reader::Reader>>,
    /// The checkpoint thread of the file (`None` in memory): see `checkpointer.rs`.
    checkpointer: Option<std::sync::Arc<checkpointer::Checkpointer>>,
}

/// Held while a run writes: one run at a time per database. The operating system releases it
/// when the process ends, however it ends, so a killed run never leaves it stuck.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<std::fs::File>,
}

impl Store {
    /// Opens (creating if needed) the database file, switches it to WAL and applies pending
    /// migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("temp_store", "memory")
            .pragma("cache_size", CACHE_SIZE_PRAGMA)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
        let mut store = Self::connect(options, location, 4).await?;
        store.reader = Some(reader::Reader::open(path, &store.location)?);
        store.checkpointer = Some(checkpointer::Checkpointer::start(path, &store.location)?);
        store.path = Some(path.to_path_buf());
        Ok(store)
    }

    /// An in-memory database (tests).
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::open("sqlite::memory:", e))?
            .foreign_keys(true);
        // One connection: every connection to :memory: is a different database.
        Self::connect(options, "sqlite::memory:".into(), 1).await
    }

    async fn connect(options: SqliteConnectOptions, location: String, max: u32) -> Result<Self> {
        use sqlx::ConnectOptions as _;
        // Big imports run long statements by design; only a statement slower than this is news.
        let options = options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(30));
        // Switching a new file to WAL and migrating it happen on one connection first: done by
        // several pooled connections at once, the journal-mode change can fail with "database
        // is locked" without waiting.
        if max > 1 {
            use sqlx::Connection as _;
            let mut first = options.connect().await.map_err(|e| StoreError::open(&location, e))?;
            sqlx::migrate!("../../migrations")
                .run(&mut first)
                .await
                .map_err(|e| StoreError::Migrate { location: location.clone(), source: e })?;
            first.close().await.map_err(|e| StoreError::open(&location, e))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::open(&location, e))?;
        sqlx::migrate!("../../migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate { location: location.clone(), source: e })?;
        Ok(Self { pool, location, path: None, reader: None, checkpointer: None })
    }

    /// Takes the run lock of this database (`<database>.lock`), or says which process holds it.
    pub fn lock_runs(&self) -> Result<RunLock> {
        use std::io::{Read as _, Seek as _, Write as _};
        let Some(path) = &self.path else { return Ok(RunLock { _file: None }) };
        let lock_path = path.with_file_name(format!(
            "{}.lock",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "syncctl.db".into())
        ));
        let io = |e: std::io::Error| StoreError::Lock {
            path: lock_path.display().to_string(),
            detail: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                write!(file, "{}", std::process::id()).map_err(io)?;
                Ok(RunLock { _file: Some(file) })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Err(StoreError::Lock {
                    path: lock_path.display().to_string(),
                    detail: format!(
                        "another syncctl run (pid {}) is writing to this database",
                        holder.trim()
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Where the database lives (for messages).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        if let Some(reader) = &self.reader {
            reader.close();
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
        self.pool.close().await;
    }

    /// The id of the connector called `name`, creating its row if needed.
    pub async fn ensure_connector(&self, name: &str, kind: &str, now: i64) -> Result<ConnectorId> {
        sqlx::query(
            "INSERT INTO connectors (name, kind, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(kind)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("ensure connector", e))?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM connectors WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::query("ensure connector", e))?;
        Ok(id)
    }

    /// The name of a connector by row id.
    pub async fn connector_name(&self, id: ConnectorId) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT name FROM connectors WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::query("read connectors", e))
    }

    /// The id of an existing connector.
    pub async fn connector_id(&self, name: &str) -> Result<Option<ConnectorId>> {
        sqlx::query_scalar("SELECT id FROM connectors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::query("find connector", e))
    }

    /// `PRAGMA integrity_check` and foreign-key check; `Ok(())` when the file is sound.
    pub async fn check_integrity(&self) -> Result<()> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("integrity check", e))?;
        if rows != ["ok"] {
            return Err(StoreError::Integrity { location: self.location.clone(), detail: rows.join("; ") });
        }
        Ok(())
    }
}

/// The steps of SQLite's plan for a statement, for the tests that hold a statement to its index.
#[cfg(test)]
pub(crate) async fn plan_steps(store: &Store, sql: &str) -> Vec<String> {
    let steps: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN QUERY PLAN {sql}: {e}"));
    steps.into_iter().map(|s| s.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_run_at_a_time_per_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        let held = a.lock_runs().unwrap();
        let err = b.lock_runs().unwrap_err().to_string();
        assert!(err.contains("m.db.lock") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        b.lock_runs().unwrap();
        // In memory there is nothing to share.
        let m = Store::open_in_memory().await.unwrap();
        let _x = m.lock_runs().unwrap();
        let _y = m.lock_runs().unwrap();
    }

    #[tokio::test]
    async fn retention_removes_old_finished_runs_with_their_errors() {
        let s = Store::open_in_memory().await.unwrap();
        let old = s.start_run("delta-import", None, "a", 1_000).await.unwrap();
        s.add_run_errors(
            old,
            &[RunError {
                level: Severity::Error,
                anchor: None,
                dn: None,
                kind: "k".into(),
                message: "m".into(),
            }],
            1_500,
        )
        .await
        .unwrap();
        s.finish_run(old, "success", None, 0, "", 2_000).await.unwrap();
        let new = s.start_run("delta-import", None, "a", 9_000).await.unwrap();
        s.finish_run(new, "success", None, 0, "", 10_000).await.unwrap();
        let running = s.start_run("full-import", None, "b", 500).await.unwrap();
        assert_eq!(s.last_completed("delta-import").await.unwrap(), Some(10_000));
        assert_eq!(s.prune_runs(5_000).await.unwrap(), 1);
        assert!(s.run(old).await.unwrap().is_none());
        assert!(s.run_errors(old).await.unwrap().is_empty());
        assert!(s.run(new).await.unwrap().is_some());
        assert!(s.run(running).await.unwrap().is_some(), "a run in progress is kept");
        assert_eq!(s.last_completed("full-import").await.unwrap(), None);
    }
}
