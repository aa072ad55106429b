//! `syncctl sync [--full|--delta] [--connector NAME]...`.

use std::fmt::Write as _;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::SystemClock;
use syncctl_core::rules::RuleSet;
use syncctl_engine::{SyncConnector, SyncMode, SyncOptions, SyncReport, run_sync};
use syncctl_store::Store;

use crate::cli::SyncArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::logging::Progress;
use crate::output;

/// The effective sync rules: the defaults, with the user's rule file over them.
pub fn load_rules(plan: &Plan) -> Result<RuleSet, Failure> {
    let defaults = RuleSet::defaults().map_err(|e| Failure::usage(anyhow!("the default sync rules: {e}")))?;
    let Some(path) = &plan.sync.rules else { return Ok(defaults) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(anyhow!("cannot read the sync rules file {}: {e}", path.display())))?;
    let user = RuleSet::from_toml(&text, &path.display().to_string()).map_err(Failure::usage)?;
    Ok(defaults.with_overrides(user))
}

/// Every configured connector as sync sees it (registered in the store), sources first.
pub async fn sync_connectors(plan: &Plan, store: &Store) -> Result<Vec<SyncConnector>, Failure> {
    let mut out = Vec::with_capacity(plan.connectors.len());
    for spec in &plan.connectors {
        let built = spec.build().map_err(Failure::usage)?;
        let caps = built.connector.capabilities();
        let now = syncctl_core::Clock::now_ms(&SystemClock);
        let id = store.ensure_connector(&spec.name, built.kind, now).await?;
        out.push(SyncConnector {
            id,
            name: spec.name.clone(),
            kind: built.kind.to_owned(),
            target: caps.export,
            export_attributes: caps.export_attributes,
        });
    }
    out.sort_by_key(|c| c.target);
    Ok(out)
}

/// Runs the sync of each connector asked for and prints the summaries.
pub async fn run(plan: &Plan, args: &SyncArgs, json: bool) -> CmdResult {
    for name in &args.connectors {
        if plan.connector(name).is_none() {
            return Err(Failure::usage(anyhow!(
                "no connector named `{name}` in {} (configured: {})",
                plan.source.display(),
                plan.connector_names()
            )));
        }
    }
    if plan.connectors.is_empty() {
        return Err(Failure::usage(anyhow!(
            "{} configures no connector to synchronize",
            plan.source.display()
        )));
    }
    let rules = load_rules(plan)?;
    let store = super::open_store(plan).await?;
    let _lock = store.lock_runs()?;
    let connectors = sync_connectors(plan, &store).await?;
    let mode = if args.full { SyncMode::Full } else { SyncMode::Delta };
    let options = SyncOptions { error_limit: plan.sync.error_limit, ..SyncOptions::default() };
    let mut reports = Vec::new();
    let mut code = Code::Success;
    for c in connectors.iter().filter(|c| args.connectors.is_empty() || args.connectors.contains(&c.name)) {
        let progress = Progress::new(!json, &format!("{mode} of {}", c.name));
        let report = run_sync(&store, &rules, c, &connectors, mode, &options, &SystemClock, &progress).await;
        progress.finish();
        let report = report?;
        let this = Code::for_run_status(&report.status);
        if this.status() > code.status() {
            code = this;
        }
        if !json {
            output::print(&summary(&report))?;
        }
        let stopped = this == Code::Stopped;
        reports.push(report);
        if stopped {
            break;
        }
    }
    store.close().await;
    if json {
        output::print_json(&json!({ "runs": reports.iter().map(report_json).collect::<Vec<_>>() }))?;
    }
    Ok(code)
}

fn report_json(r: &SyncReport) -> serde_json::Value {
    json!({
        "run_id": r.run_id,
        "connector": r.connector,
        "profile": r.profile.to_string(),
        "status": r.status,
        "counts": r.counts,
        "notes": r.notes,
    })
}

fn summary(r: &SyncReport) -> String {
    let c = &r.counts;
    let mut s = String::new();
    let _ = writeln!(s, "{} of `{}`: {} (run {})", r.profile, r.connector, r.status, r.run_id);
    let _ = writeln!(
        s,
        "  objects    {} read, {} projected, {} joined, {} disconnected, {} errors",
        c.processed, c.projected, c.joined, c.disconnected, c.errors
    );
    let _ = writeln!(s, "  metaverse  {} updated, {} deleted", c.mv_updated, c.mv_deleted);
    let _ = writeln!(
        s,
        "  exports    {} adds, {} updates, {} deletes staged, {} withdrawn (syncctl export --preview)",
        c.export_adds, c.export_updates, c.export_deletes, c.exports_withdrawn
    );
    for note in r.notes.iter().filter(|n| !n.contains(" read, ")) {
        let _ = writeln!(s, "  note       {note}");
    }
    if c.errors > 0 {
        let _ = writeln!(s, "  errors     syncctl runs --errors {}", r.run_id);
    }
    s
}
