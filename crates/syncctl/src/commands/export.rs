//! `syncctl export --preview [--connector NAME] [--csv FILE]`: what export would write.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::{AttrValues, SystemClock};
use syncctl_engine::{DeletionThreshold, ExportOptions, ExportReport, SyncConnector, run_export};
use syncctl_store::{MvId, PendingExport, Store};

use crate::cli::ExportArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// Exports, or previews the pending exports.
pub async fn run(plan: &Plan, args: &ExportArgs, json: bool) -> CmdResult {
    if !args.preview {
        return apply(plan, args, json).await;
    }
    let store = super::open_store(plan).await?;
    let connector = match &args.connector {
        Some(name) => Some(store.connector_id(name).await?.ok_or_else(|| {
            Failure::usage(anyhow!(
                "no connector named `{name}` has run yet (configured: {})",
                plan.connector_names()
            ))
        })?),
        None => None,
    };
    let pending = store.pending_exports(connector).await?;
    let names = connector_names(&pending, &store).await?;
    let rows = preview_rows(&store, &pending, &names).await?;
    store.close().await;
    if let Some(path) = &args.csv {
        let text = to_csv(&rows).map_err(Failure::stopped)?;
        if path.as_os_str() == "-" {
            output::print(&text)?;
        } else {
            std::fs::write(path, text)
                .map_err(|e| Failure::stopped(anyhow!("cannot write {}: {e}", path.display())))?;
        }
    }
    if json {
        let list: Vec<serde_json::Value> = pending
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "connector": names.get(&p.connector_id).cloned().unwrap_or_default(),
                    "object": p.display,
                    "object_type": p.object_type,
                    "operation": p.operation,
                    "rule": p.rule,
                    "status": p.status,
                    "mv_id": p.mv_id,
                    "changes": p.changes,
                })
            })
            .collect();
        output::print_json(&json!({ "pending_exports": list }))?;
    } else if args.csv.as_ref().is_none_or(|p| p.as_os_str() != "-") {
        output::print(&table(&pending, &rows))?;
    }
    Ok(Code::Success)
}

/// Runs the export of every target connector (or the one named).
async fn apply(plan: &Plan, args: &ExportArgs, json: bool) -> CmdResult {
    let store = super::open_store(plan).await?;
    let _lock = store.lock_runs()?;
    let connectors = super::sync::sync_connectors(plan, &store).await?;
    let targets: Vec<&SyncConnector> = connectors
        .iter()
        .filter(|c| c.target && args.connector.as_ref().is_none_or(|n| n == &c.name))
        .collect();
    if targets.is_empty() {
        return Err(Failure::usage(match &args.connector {
            Some(n) if plan.connector(n).is_some() => anyhow!("connector `{n}` does not take exports"),
            Some(n) => anyhow!("no connector named `{n}` (configured: {})", plan.connector_names()),
            None => anyhow!("no configured connector takes exports (configured: {})", plan.connector_names()),
        }));
    }
    let options = ExportOptions {
        staging: plan.sync.staging,
        threshold: DeletionThreshold {
            count: plan.sync.deletion_threshold,
            percent: plan.sync.deletion_threshold_percent,
        },
        approve_deletes: args.approve_deletes.clone(),
        ..ExportOptions::default()
    };
    let mut code = Code::Success;
    let mut reports = Vec::new();
    for t in targets {
        let spec = plan
            .connector(&t.name)
            .ok_or_else(|| Failure::usage(anyhow!("connector `{}` vanished", t.name)))?;
        let mut built = spec.build().map_err(Failure::usage)?;
        let report = run_export(&store, built.connector.as_mut(), t, &options, &SystemClock).await?;
        let this = Code::for_run_status(&report.status);
        if this.status() > code.status() {
            code = this;
        }
        if this == Code::Stopped {
            let mut notes = report.notes.clone();
            if let Some(token) = &report.approval_token {
                notes.push(format!(
                    "{} deletes held: review them with `syncctl export --preview`, release them with `syncctl export --approve-deletes {token}`",
                    report.held_deletes.len()
                ));
            }
            let notice =
                super::sync::stopped_notice(plan, "export", &t.name, report.run_id, &report.status, &notes);
            super::mail::notify_operators(plan, &store, &[notice]).await?;
        }
        if !json {
            output::print(&export_summary(&report))?;
        }
        reports.push(report);
    }
    store.close().await;
    if json {
        output::print_json(&json!({ "runs": reports }))?;
    }
    Ok(code)
}

fn export_summary(r: &ExportReport) -> String {
    let c = &r.counts;
    let mut s = String::new();
    let _ = writeln!(s, "export to `{}`: {} (run {})", r.connector, r.status, r.run_id);
    let _ = writeln!(
        s,
        "  objects    {} added, {} updated, {} deleted, {} failed, {} held",
        c.adds, c.updates, c.deletes, c.failed, c.held
    );
    if !r.held_deletes.is_empty() {
        let _ = writeln!(s, "  held       {} deletes:", r.held_deletes.len());
        for d in &r.held_deletes {
            let _ = writeln!(s, "               {d}");
        }
    }
    if let Some(t) = &r.approval_token {
        let _ = writeln!(s, "  approve    syncctl export --approve-deletes {t}");
    }
    for n in &r.notes {
        let _ = writeln!(s, "  note       {n}");
    }
    s
}

/// One line of the preview.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    connector: String,
    status: String,
    object: String,
    operation: &'static str,
    attribute: String,
    old: String,
    new: String,
}

/// The names of the connectors the pending exports belong to (from the database, so that a
/// connector no longer configured is still named).
async fn connector_names(pending: &[PendingExport], store: &Store) -> Result<HashMap<i64, String>, Failure> {
    let mut out = HashMap::new();
    for p in pending {
        if let std::collections::hash_map::Entry::Vacant(e) = out.entry(p.connector_id) {
            e.insert(store.connector_name(p.connector_id).await?.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Values as people read them; a metaverse reference as the object it names.
fn shown(values: Option<&AttrValues>, refs: &HashMap<MvId, String>) -> String {
    let Some(values) = values else { return String::new() };
    let texts: Vec<String> = match values {
        AttrValues::Reference(v) => v
            .iter()
            .map(|r| {
                r.strip_prefix("mv:")
                    .and_then(|id| id.parse::<i64>().ok())
                    .and_then(|id| refs.get(&id).cloned())
                    .unwrap_or_else(|| r.clone())
            })
            .collect(),
        v => v.display_values(),
    };
    texts.join("; ")
}

async fn preview_rows(
    store: &Store,
    pending: &[PendingExport],
    names: &HashMap<i64, String>,
) -> Result<Vec<Row>, Failure> {
    let mut ids: Vec<MvId> = Vec::new();
    for p in pending {
        for c in &p.changes {
            for v in [&c.old, &c.new].into_iter().flatten() {
                if let AttrValues::Reference(refs) = v {
                    ids.extend(
                        refs.iter().filter_map(|r| r.strip_prefix("mv:").and_then(|i| i.parse::<i64>().ok())),
                    );
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut refs = HashMap::new();
    for (id, o) in store.mv_by_ids(&ids).await? {
        let name = ["userPrincipalName", "mail", "displayName"]
            .iter()
            .find_map(|a| o.attributes.get(a).and_then(|v| v.display_values().into_iter().next()))
            .unwrap_or_else(|| format!("metaverse object {id}"));
        refs.insert(id, name);
    }
    let mut rows = Vec::new();
    for p in pending {
        let connector = names.get(&p.connector_id).cloned().unwrap_or_default();
        if p.changes.is_empty() {
            rows.push(Row {
                connector: connector.clone(),
                status: p.status.clone(),
                object: p.display.clone(),
                operation: p.operation.as_str(),
                attribute: String::new(),
                old: String::new(),
                new: String::new(),
            });
        }
        for c in &p.changes {
            rows.push(Row {
                connector: connector.clone(),
                status: p.status.clone(),
                object: p.display.clone(),
                operation: p.operation.as_str(),
                attribute: c.attribute.clone(),
                old: shown(c.old.as_ref(), &refs),
                new: shown(c.new.as_ref(), &refs),
            });
        }
    }
    Ok(rows)
}

fn to_csv(rows: &[Row]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["connector", "object", "operation", "attribute", "old", "new"])?;
    for r in rows {
        w.write_record([&r.connector, &r.object, r.operation, &r.attribute, &r.old, &r.new])?;
    }
    Ok(String::from_utf8(w.into_inner().map_err(|e| anyhow!("{e}"))?)?)
}

fn table(pending: &[PendingExport], rows: &[Row]) -> String {
    let mut s = String::new();
    if pending.is_empty() {
        s.push_str("no pending exports\n");
        return s;
    }
    let count = |op: &str| pending.iter().filter(|p| p.operation.as_str() == op).count();
    let _ = writeln!(
        s,
        "{} pending exports: {} adds, {} updates, {} deletes",
        pending.len(),
        count("add"),
        count("update"),
        count("delete")
    );
    let mut last = (String::new(), String::new());
    for r in rows {
        if (r.connector.clone(), r.object.clone()) != last {
            let state = match r.status.as_str() {
                "pending" => String::new(),
                "exported" => " (exported, waiting for an import to confirm it)".to_owned(),
                "exporting" => " (was being sent when syncctl stopped: sent again, checked first)".to_owned(),
                other => format!(" ({other})"),
            };
            let _ = writeln!(s, "\n{} {} [{}]{state}", r.operation, r.object, r.connector);
            last = (r.connector.clone(), r.object.clone());
        }
        if r.attribute.is_empty() {
            continue;
        }
        if r.old.is_empty() {
            let _ = writeln!(s, "  {:<24} {}", r.attribute, r.new);
        } else {
            let new = if r.new.is_empty() { "(cleared)".to_owned() } else { r.new.clone() };
            let _ = writeln!(s, "  {:<24} {} -> {}", r.attribute, r.old, new);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_show_as_the_object_they_name_and_csv_has_one_row_per_attribute() {
        let refs = HashMap::from([(7, "alice@corp.example.com".to_owned())]);
        let v = AttrValues::Reference(vec!["mv:7".into(), "mv:8".into()]);
        assert_eq!(shown(Some(&v), &refs), "alice@corp.example.com; mv:8");
        let rows = vec![Row {
            connector: "cloud".into(),
            status: "pending".into(),
            object: "bob@corp.example.com".into(),
            operation: "update",
            attribute: "displayName".into(),
            old: "Bob".into(),
            new: "Bob, Jr.".into(),
        }];
        assert_eq!(
            to_csv(&rows).unwrap(),
            "connector,object,operation,attribute,old,new\ncloud,bob@corp.example.com,update,displayName,Bob,\"Bob, Jr.\"\n"
        );
    }
}
