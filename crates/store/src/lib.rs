//! # syncctl-store: the metaverse database
//!
//! Owns the SQLite file (through sqlx, WAL mode, one writer) and every table in it: connectors,
//! connector spaces (one [`StoredCsObject`] per anchor), watermarks and run history. Schema
//! changes are the SQL files in `migrations/`, applied by [`Store::open`].
//!
//! Main types: [`Store`] (the handle), [`CsWrite`] (one change to a connector space, written in
//! sorted batches by [`Store::write_import_batch`]), [`RunRecord`] and [`RunCounts`].
//!
//! It must not decide anything: what changed, what to write and which status a run ends with are
//! the engine's decisions. It must not store secrets.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod connector_space;
mod error;
mod runs;
mod watermark;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use connector_space::{CsIndexEntry, CsLookup, CsWrite, StoredCsObject};
pub use error::{Result, StoreError};
pub use runs::{RunCounts, RunError, RunRecord, RunStatus};
pub use watermark::StoredWatermark;

/// A connector's row id.
pub type ConnectorId = i64;
/// A run's row id.
pub type RunId = i64;

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    location: String,
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
            .pragma("cache_size", "-16384");
        Self::connect(options, location, 4).await
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
        Ok(Self { pool, location })
    }

    /// Where the database lives (for messages).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
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
