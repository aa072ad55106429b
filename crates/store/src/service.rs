//! What the service keeps besides run history: readiness-assessment summaries
//! ([`AssessSummary`]) and the settings fingerprint of each connector.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::Store;
use crate::error::{Result, StoreError};

/// Findings of one rule in an [`AssessSummary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFindings {
    /// The rule id.
    pub rule: String,
    /// Its severity (`error`, `warning`, `info`).
    pub severity: String,
    /// How many findings.
    pub count: u64,
}

/// The summary of one readiness assessment: counts, never the findings themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessSummary {
    /// When it ran, ms since the epoch.
    pub at: i64,
    /// `assess` (the command) or `serve` (the service's schedule).
    pub origin: String,
    /// `ready`, `warnings` or `errors`.
    pub verdict: String,
    /// Objects the rules ran on.
    pub objects: u64,
    /// Error findings.
    pub errors: u64,
    /// Warning findings.
    pub warnings: u64,
    /// Info findings.
    pub infos: u64,
    /// Findings per rule (rules without findings left out).
    pub by_rule: Vec<RuleFindings>,
    /// The connectors read.
    pub sources: Vec<String>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Records an assessment summary.
    pub async fn record_assess_summary(&self, s: &AssessSummary) -> Result<()> {
        let json = |v: serde_json::Result<String>| {
            v.map_err(|e| StoreError::Corrupt {
                table: "assess_summaries",
                key: s.at.to_string(),
                detail: e.to_string(),
            })
        };
        let by_rule = json(serde_json::to_string(&s.by_rule))?;
        let sources = json(serde_json::to_string(&s.sources))?;
        sqlx::query(
            "INSERT INTO assess_summaries (at, origin, verdict, objects, errors, warnings, infos, by_rule, sources) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.at)
        .bind(&s.origin)
        .bind(&s.verdict)
        .bind(to_i64(s.objects))
        .bind(to_i64(s.errors))
        .bind(to_i64(s.warnings))
        .bind(to_i64(s.infos))
        .bind(by_rule)
        .bind(sources)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("record assess summary", e))?;
        Ok(())
    }

    /// The latest assessment summary, if any.
    pub async fn latest_assess_summary(&self) -> Result<Option<AssessSummary>> {
        let q = |e| StoreError::query("read assess summary", e);
        let Some(row) = sqlx::query(
            "SELECT at, origin, verdict, objects, errors, warnings, infos, by_rule, sources \
             FROM assess_summaries ORDER BY at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(q)?
        else {
            return Ok(None);
        };
        let at: i64 = row.try_get("at").map_err(q)?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            table: "assess_summaries",
            key: at.to_string(),
            detail: e.to_string(),
        };
        let by_rule: String = row.try_get("by_rule").map_err(q)?;
        let sources: String = row.try_get("sources").map_err(q)?;
        Ok(Some(AssessSummary {
            at,
            origin: row.try_get("origin").map_err(q)?,
            verdict: row.try_get("verdict").map_err(q)?,
            objects: to_u64(row.try_get("objects").map_err(q)?),
            errors: to_u64(row.try_get("errors").map_err(q)?),
            warnings: to_u64(row.try_get("warnings").map_err(q)?),
            infos: to_u64(row.try_get("infos").map_err(q)?),
            by_rule: serde_json::from_str(&by_rule).map_err(corrupt)?,
            sources: serde_json::from_str(&sources).map_err(corrupt)?,
        }))
    }

    /// The settings fingerprint recorded for the connector `name`, if any.
    pub async fn settings_fingerprint(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT fingerprint FROM connector_settings WHERE connector_name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::query("read connector settings fingerprint", e))
    }

    /// Records the settings fingerprint with which the connector `name` completed a run.
    pub async fn record_settings_fingerprint(&self, name: &str, fingerprint: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO connector_settings (connector_name, fingerprint, recorded_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (connector_name) DO UPDATE SET fingerprint = ?2, recorded_at = ?3",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("record connector settings fingerprint", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn summaries_and_fingerprints_round_trip() {
        let store = Store::open_in_memory().await.unwrap();
        assert!(store.latest_assess_summary().await.unwrap().is_none());
        let mut s = AssessSummary {
            at: 1_000,
            origin: "assess".into(),
            verdict: "errors".into(),
            objects: 12,
            errors: 3,
            warnings: 2,
            infos: 0,
            by_rule: vec![RuleFindings { rule: "upn-format".into(), severity: "error".into(), count: 3 }],
            sources: vec!["corp".into()],
        };
        store.record_assess_summary(&s).await.unwrap();
        s.at = 2_000;
        s.origin = "serve".into();
        store.record_assess_summary(&s).await.unwrap();
        assert_eq!(store.latest_assess_summary().await.unwrap(), Some(s));

        assert_eq!(store.settings_fingerprint("corp").await.unwrap(), None);
        store.record_settings_fingerprint("corp", "a", 1).await.unwrap();
        store.record_settings_fingerprint("corp", "b", 2).await.unwrap();
        assert_eq!(store.settings_fingerprint("corp").await.unwrap().as_deref(), Some("b"));
    }
}
