//! `syncctl runs`: run history, or the per-object errors of one run.

use anyhow::anyhow;
use serde_json::json;
use syncctl_store::{RunError, RunRecord};

use crate::cli::RunsArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// Prints run history or one run's errors.
pub async fn run(plan: &Plan, args: &RunsArgs, json: bool) -> CmdResult {
    let store = super::open_store(plan).await?;
    let result = async {
        if let Some(id) = args.errors {
            let Some(run) = store.run(id).await? else {
                if json {
                    output::print_json(&json!([]))?;
                }
                return Err(Failure::not_found(anyhow!("no run {id} in {}", store.location())));
            };
            let errors = store.run_errors(id).await?;
            if json {
                output::print_json(&serde_json::to_value(&errors)?)?;
            } else if errors.is_empty() {
                output::print(&format!(
                    "run {id} ({} of {}) has no per-object errors or warnings\n",
                    run.profile,
                    connector(&run)
                ))?;
            } else {
                output::print(&errors_table(&errors))?;
            }
            return Ok(Code::Success);
        }
        let runs = store.runs(args.connector.as_deref(), args.limit).await?;
        if json {
            output::print_json(&serde_json::Value::Array(runs.iter().map(run_json).collect()))?;
        } else if runs.is_empty() {
            let scope =
                args.connector.as_deref().map(|c| format!(" for connector `{c}`")).unwrap_or_default();
            output::print(&format!("no runs recorded{scope} in {}\n", store.location()))?;
        } else {
            output::print(&runs_table(&runs))?;
        }
        Ok(Code::Success)
    }
    .await;
    store.close().await;
    result
}

fn connector(r: &RunRecord) -> &str {
    r.connector.as_deref().unwrap_or("-")
}

/// `+adds ~updates >renames -deletes !errors`, and `?warnings` when there are any.
fn changes(r: &RunRecord) -> String {
    let c = &r.counts;
    let warnings = if c.warnings > 0 { format!(" ?{}", c.warnings) } else { String::new() };
    format!("+{} ~{} >{} -{} !{}{warnings}", c.adds, c.updates, c.renames, c.deletes, c.errors)
}

fn run_json(r: &RunRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "profile": r.profile,
        "connector": r.connector,
        "started": output::rfc3339(r.started_at),
        "ended": r.ended_at.map(output::rfc3339),
        "started_at_ms": r.started_at,
        "ended_at_ms": r.ended_at,
        "duration_ms": r.ended_at.map(|e| e - r.started_at),
        "status": r.status,
        "counts": r.counts,
        "method": r.method,
        "pages": r.pages,
        "notes": r.notes,
    })
}

fn runs_table(runs: &[RunRecord]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.profile.clone(),
                connector(r).to_owned(),
                output::rfc3339(r.started_at),
                r.ended_at.map_or_else(|| "-".to_owned(), |e| output::duration(e - r.started_at)),
                r.status.clone(),
                changes(r),
                r.notes.clone(),
            ]
        })
        .collect();
    output::table(&["ID", "PROFILE", "CONNECTOR", "STARTED", "DURATION", "STATUS", "CHANGES", "NOTES"], &rows)
}

fn errors_table(errors: &[RunError]) -> String {
    let rows: Vec<Vec<String>> = errors
        .iter()
        .map(|e| {
            vec![
                e.level.as_str().to_owned(),
                e.kind.clone(),
                e.anchor.clone().unwrap_or_else(|| "-".into()),
                e.dn.clone().unwrap_or_else(|| "-".into()),
                e.message.clone(),
            ]
        })
        .collect();
    output::table(&["LEVEL", "KIND", "ANCHOR", "DN", "MESSAGE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncctl_store::RunCounts;

    #[test]
    fn history_rows() {
        let r = RunRecord {
            id: 3,
            profile: "delta-import".into(),
            connector: Some("corp-ad".into()),
            started_at: 1_795_340_057_000,
            ended_at: Some(1_795_340_058_250),
            status: "success".into(),
            counts: RunCounts {
                adds: 1,
                updates: 2,
                renames: 3,
                deletes: 4,
                unchanged: 5,
                errors: 6,
                warnings: 0,
            },
            method: Some("dirsync".into()),
            pages: 1,
            notes: String::new(),
        };
        let t = runs_table(std::slice::from_ref(&r));
        let line = t.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "3   delta-import  corp-ad    2026-11-22T09:34:17Z  1s 250ms  success  +1 ~2 >3 -4 !6"
        );
        let j = run_json(&r);
        assert_eq!(j["started"], "2026-11-22T09:34:17Z");
        assert_eq!(j["duration_ms"], 1250);
    }
}
