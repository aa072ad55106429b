//! Run history: one row per run of a run profile, with counts, status and per-object errors.

use serde::Serialize;
use sqlx::{Row, Sqlite, Transaction};

use crate::error::{Result, StoreError};
use crate::{ConnectorId, RunId, Store};

/// How a run ended (or that it has not yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunStatus(pub String);

impl RunStatus {
    /// Still running, or the process died while it ran.
    pub const IN_PROGRESS: &'static str = "in-progress";
    /// Finished, every object fine.
    pub const SUCCESS: &'static str = "success";
    /// Finished, some objects had errors.
    pub const COMPLETED_WITH_ERRORS: &'static str = "completed-with-errors";
    /// Stopped after too many per-object errors.
    pub const STOPPED_ERROR_LIMIT: &'static str = "stopped-error-limit";
    /// The process died while the run was in progress (found at the next start).
    pub const STOPPED_INTERRUPTED: &'static str = "stopped-interrupted";
    /// The run failed after it started for a reason not the connector's: a store write refused
    /// (disk full, database locked too long), the workflow step failing.
    pub const STOPPED_STORE_ERROR: &'static str = "stopped-store-error";
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Objects added.
    pub adds: i64,
    /// Objects whose attributes changed.
    pub updates: i64,
    /// Objects renamed or moved (with or without other changes).
    pub renames: i64,
    /// Objects deleted.
    pub deletes: i64,
    /// Objects seen without change.
    pub unchanged: i64,
    /// Per-object errors.
    pub errors: i64,
    /// Per-object warnings (a value rewritten or set aside, an export retried).
    pub warnings: i64,
}

impl RunCounts {
    /// Adds another set of counters.
    pub fn add(&mut self, o: &RunCounts) {
        self.adds += o.adds;
        self.updates += o.updates;
        self.renames += o.renames;
        self.deletes += o.deletes;
        self.unchanged += o.unchanged;
        self.errors += o.errors;
        self.warnings += o.warnings;
    }
    /// Adds, updates, renames and deletes.
    pub fn changes(&self) -> i64 {
        self.adds + self.updates + self.renames + self.deletes
    }
}

/// How serious a per-object entry of run history is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object was not processed (counts towards the error limit, retried next run).
    #[default]
    Error,
    /// The object was processed, with something an operator must know (never silent).
    Warning,
}

impl Severity {
    /// `error` or `warning`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// A per-object error (or warning) of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunError {
    /// Error or warning.
    pub level: Severity,
    /// The object's anchor, when known.
    pub anchor: Option<String>,
    /// The object's DN, when known.
    pub dn: Option<String>,
    /// A stable error name.
    pub kind: String,
    /// The message.
    pub message: String,
}

/// One row of run history.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: RunId,
    /// Run profile (`full-import`, `delta-import`).
    pub profile: String,
    /// Connector name.
    pub connector: Option<String>,
    /// Start (ms since epoch).
    pub started_at: i64,
    /// End (ms since epoch), if ended.
    pub ended_at: Option<i64>,
    /// Status.
    pub status: String,
    /// Counters.
    pub counts: RunCounts,
    /// Import method used.
    pub method: Option<String>,
    /// Pages read.
    pub pages: i64,
    /// Notes (fallbacks taken, causes of a stop).
    pub notes: String,
}

pub(crate) async fn insert_errors(
    tx: &mut Transaction<'_, Sqlite>,
    run: RunId,
    errors: &[RunError],
    now: i64,
) -> Result<()> {
    // One statement per 2,000 rows: a run that warns about every object costs no round trip each.
    for chunk in errors.chunks(2000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|e| serde_json::json!([e.anchor, e.dn, e.kind, e.message, e.level.as_str()]))
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt {
            table: "run_errors",
            key: String::new(),
            detail: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO run_errors (run_id, anchor, dn, kind, message, at, level) \
             SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, ?2, value ->> 4 \
             FROM json_each(?3) ORDER BY key",
        )
        .bind(run)
        .bind(now)
        .bind(rows)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::query("record run error", e))?;
    }
    Ok(())
}

pub(crate) async fn add_counts(tx: &mut Transaction<'_, Sqlite>, run: RunId, c: &RunCounts) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET adds = adds + ?, updates = updates + ?, renames = renames + ?, deletes = deletes + ?, \
         unchanged = unchanged + ?, errors = errors + ?, warnings = warnings + ? WHERE id = ?",
    )
    .bind(c.adds)
    .bind(c.updates)
    .bind(c.renames)
    .bind(c.deletes)
    .bind(c.unchanged)
    .bind(c.errors)
    .bind(c.warnings)
    .bind(run)
    .execute(&mut **tx)
    .await
    .map_err(|e| StoreError::query("update run counts", e))?;
    Ok(())
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RunRecord> {
    let g = |e| StoreError::query("read run history", e);
    Ok(RunRecord {
        id: row.try_get("id").map_err(g)?,
        profile: row.try_get("profile").map_err(g)?,
        connector: row.try_get("connector_name").map_err(g)?,
        started_at: row.try_get("started_at").map_err(g)?,
        ended_at: row.try_get("ended_at").map_err(g)?,
        status: row.try_get("status").map_err(g)?,
        counts: RunCounts {
            adds: row.try_get("adds").map_err(g)?,
            updates: row.try_get("updates").map_err(g)?,
            renames: row.try_get("renames").map_err(g)?,
            deletes: row.try_get("deletes").map_err(g)?,
            unchanged: row.try_get("unchanged").map_err(g)?,
            errors: row.try_get("errors").map_err(g)?,
            warnings: row.try_get("warnings").map_err(g)?,
        },
        method: row.try_get("method").map_err(g)?,
        pages: row.try_get("pages").map_err(g)?,
        notes: row.try_get("notes").map_err(g)?,
    })
}

impl Store {
    /// Opens a run-history row in state `in-progress`. Rows of the same connector left
    /// `in-progress` by a process that died are closed first as `stopped-interrupted`.
    pub async fn start_run(
        &self,
        profile: &str,
        connector: Option<ConnectorId>,
        connector_name: &str,
        now: i64,
    ) -> Result<RunId> {
        let q = |e| StoreError::query("start run", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        sqlx::query(
            "UPDATE runs SET status = 'stopped-interrupted', ended_at = ?, \
             notes = notes || CASE WHEN notes = '' THEN '' ELSE '; ' END || 'the process ended while this run was in progress' \
             WHERE status = 'in-progress' AND connector_name = ?",
        )
        .bind(now)
        .bind(connector_name)
        .execute(&mut *tx)
        .await
        .map_err(q)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (profile, connector_id, connector_name, started_at, status) VALUES (?, ?, ?, ?, 'in-progress') RETURNING id",
        )
        .bind(profile)
        .bind(connector)
        .bind(connector_name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(q)?;
        tx.commit().await.map_err(q)?;
        Ok(id)
    }

    /// Changes the profile of a running run (a delta that fell back to a full import).
    pub async fn set_run_profile(&self, run: RunId, profile: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET profile = ? WHERE id = ?")
            .bind(profile)
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::query("update run", e))?;
        Ok(())
    }

    /// Closes a run with its status, method, page count and notes.
    pub async fn finish_run(
        &self,
        run: RunId,
        status: &str,
        method: Option<&str>,
        pages: i64,
        notes: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET status = ?, method = ?, pages = ?, notes = ?, ended_at = ? WHERE id = ?",
        )
        .bind(status)
        .bind(method)
        .bind(pages)
        .bind(notes)
        .bind(now)
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("finish run", e))?;
        Ok(())
    }

    /// Closes a run still `in-progress` as `stopped-store-error`, `error` added to its notes (a
    /// run already closed is left as it is).
    pub async fn close_failed_run(&self, run: RunId, error: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET status = ?, ended_at = ?, \
             notes = notes || CASE WHEN notes = '' THEN '' ELSE '; ' END || ? \
             WHERE id = ? AND status = 'in-progress'",
        )
        .bind(RunStatus::STOPPED_STORE_ERROR)
        .bind(now)
        .bind(format!("stopped: {error}"))
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("finish run", e))?;
        Ok(())
    }

    /// Records per-object errors and warnings outside a batch.
    pub async fn add_run_errors(&self, run: RunId, errors: &[RunError], now: i64) -> Result<()> {
        let q = |e| StoreError::query("record run errors", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        insert_errors(&mut tx, run, errors, now).await?;
        let count = |l| i64::try_from(errors.iter().filter(|e| e.level == l).count()).unwrap_or(i64::MAX);
        let counts = RunCounts {
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            ..Default::default()
        };
        add_counts(&mut tx, run, &counts).await?;
        tx.commit().await.map_err(q)?;
        Ok(())
    }

    /// One run.
    pub async fn run(&self, run: RunId) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(run)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::query("read run", e))?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// The latest runs, newest first, optionally of one connector.
    pub async fn runs(&self, connector: Option<&str>, limit: i64) -> Result<Vec<RunRecord>> {
        let rows = match connector {
            Some(name) => {
                sqlx::query("SELECT * FROM runs WHERE connector_name = ? ORDER BY id DESC LIMIT ?")
                    .bind(name)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY id DESC LIMIT ?")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| StoreError::query("list runs", e))?;
        rows.iter().map(record_from_row).collect()
    }

    /// Deletes the finished runs that ended before `before` (ms since epoch), with their
    /// per-object errors: run-history retention. Runs still in progress are kept. Returns how
    /// many runs went.
    pub async fn prune_runs(&self, before: i64) -> Result<u64> {
        let q = |e| StoreError::query("prune run history", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        sqlx::query(
            "DELETE FROM run_errors WHERE run_id IN \
             (SELECT id FROM runs WHERE ended_at IS NOT NULL AND ended_at < ? AND status <> 'in-progress')",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(q)?;
        let gone = sqlx::query(
            "DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < ? AND status <> 'in-progress'",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(q)?
        .rows_affected();
        tx.commit().await.map_err(q)?;
        Ok(gone)
    }

    /// When the latest run of `profile` that did not stop ended (ms since epoch), if any.
    pub async fn last_completed(&self, profile: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MAX(ended_at) FROM runs WHERE profile = ? AND status IN ('success', 'completed-with-errors')",
        )
        .bind(profile)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::query("read run history", e))
    }

    /// The per-object errors of one run.
    pub async fn run_errors(&self, run: RunId) -> Result<Vec<RunError>> {
        let rows = sqlx::query(
            "SELECT anchor, dn, kind, message, level FROM run_errors WHERE run_id = ? ORDER BY id",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("list run errors", e))?;
        rows.iter()
            .map(|r| {
                let g = |e| StoreError::query("list run errors", e);
                let level: String = r.try_get("level").map_err(g)?;
                Ok(RunError {
                    level: if level == "warning" { Severity::Warning } else { Severity::Error },
                    anchor: r.try_get("anchor").map_err(g)?,
                    dn: r.try_get("dn").map_err(g)?,
                    kind: r.try_get("kind").map_err(g)?,
                    message: r.try_get("message").map_err(g)?,
                })
            })
            .collect()
    }
}
