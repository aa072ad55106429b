//! Watermarks: where the next delta import of a connector starts.

use std::collections::BTreeMap;

use sqlx::{Row, Sqlite, Transaction};
use syncctl_core::Watermark;

use crate::error::{Result, StoreError};
use crate::{ConnectorId, RunId, Store};

/// A connector's stored watermark and whether a full import is owed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWatermark {
    /// The watermark, if one was ever stored.
    pub watermark: Option<Watermark>,
    /// True while a full import has started and not completed.
    pub full_import_required: bool,
    /// The run that stored it.
    pub run_id: Option<RunId>,
}

pub(crate) async fn put(
    tx: &mut Transaction<'_, Sqlite>,
    connector: ConnectorId,
    w: &Watermark,
    run: RunId,
    now: i64,
) -> Result<()> {
    let extra = serde_json::to_string(&w.extra).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "INSERT INTO watermarks (connector_id, kind, value, server, extra, run_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (connector_id) DO UPDATE SET kind = excluded.kind, value = excluded.value, server = excluded.server, \
         extra = excluded.extra, run_id = excluded.run_id, updated_at = excluded.updated_at",
    )
    .bind(connector)
    .bind(&w.kind)
    .bind(w.value.as_slice())
    .bind(&w.server)
    .bind(extra)
    .bind(run)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| StoreError::query("store watermark", e))?;
    Ok(())
}

impl Store {
    /// The stored watermark of a connector.
    pub async fn watermark(&self, connector: ConnectorId) -> Result<Option<StoredWatermark>> {
        let row = sqlx::query(
            "SELECT kind, value, server, extra, run_id, full_import_required FROM watermarks WHERE connector_id = ?",
        )
        .bind(connector)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query("read watermark", e))?;
        let Some(row) = row else { return Ok(None) };
        let g = |e| StoreError::query("read watermark", e);
        let kind: Option<String> = row.try_get("kind").map_err(g)?;
        let value: Option<Vec<u8>> = row.try_get("value").map_err(g)?;
        let server: Option<String> = row.try_get("server").map_err(g)?;
        let extra: String = row.try_get("extra").map_err(g)?;
        let extra: BTreeMap<String, String> = serde_json::from_str(&extra).map_err(|e| {
            StoreError::Corrupt { table: "watermarks", key: connector.to_string(), detail: e.to_string() }
        })?;
        let required: i64 = row.try_get("full_import_required").map_err(g)?;
        let watermark = match (kind, value) {
            (Some(kind), Some(value)) => {
                Some(Watermark { kind, value, server: server.unwrap_or_default(), extra })
            }
            _ => None,
        };
        Ok(Some(StoredWatermark {
            watermark,
            full_import_required: required != 0,
            run_id: row.try_get("run_id").map_err(g)?,
        }))
    }

    /// Marks (or clears) that a full import is owed before any delta.
    pub async fn set_full_import_required(
        &self,
        connector: ConnectorId,
        required: bool,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO watermarks (connector_id, updated_at, full_import_required) VALUES (?, ?, ?) \
             ON CONFLICT (connector_id) DO UPDATE SET full_import_required = excluded.full_import_required, \
             updated_at = excluded.updated_at",
        )
        .bind(connector)
        .bind(now)
        .bind(i64::from(required))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("mark full import", e))?;
        Ok(())
    }

    /// Stores the final watermark of a completed full import and clears the owed-full flag, in
    /// one transaction.
    pub async fn complete_full_import(
        &self,
        connector: ConnectorId,
        watermark: Option<&Watermark>,
        run: RunId,
        now: i64,
    ) -> Result<()> {
        let q = |e| StoreError::query("complete full import", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        if let Some(w) = watermark {
            put(&mut tx, connector, w, run, now).await?;
        }
        sqlx::query("UPDATE watermarks SET full_import_required = 0 WHERE connector_id = ?")
            .bind(connector)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        tx.commit().await.map_err(q)?;
        Ok(())
    }

    /// Stores a watermark outside a batch (end of a delta).
    pub async fn put_watermark(
        &self,
        connector: ConnectorId,
        w: &Watermark,
        run: RunId,
        now: i64,
    ) -> Result<()> {
        let q = |e| StoreError::query("store watermark", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        put(&mut tx, connector, w, run, now).await?;
        tx.commit().await.map_err(q)?;
        Ok(())
    }

    /// Forgets a connector's watermark (the next delta becomes a full import).
    pub async fn clear_watermark(&self, connector: ConnectorId) -> Result<()> {
        sqlx::query("DELETE FROM watermarks WHERE connector_id = ?")
            .bind(connector)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::query("clear watermark", e))?;
        Ok(())
    }
}
