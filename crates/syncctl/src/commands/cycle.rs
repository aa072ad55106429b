//! `syncctl cycle [--full]`: import on every connector, then sync, then export, in Entra
//! Connect's order (import AD, import cloud, sync AD, sync cloud, export cloud), each step a run
//! in run history, with a progress display and a closing summary.

use std::fmt::Write as _;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::{ImportMode, SystemClock};
use syncctl_engine::{
    DeletionThreshold, ExportOptions, ImportOptions, SyncMode, SyncOptions, run_export, run_import, run_sync,
};

use crate::cli::CycleArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::logging::Progress;
use crate::output;

/// One step of the cycle, for the summary.
struct Step {
    step: &'static str,
    connector: String,
    profile: String,
    status: String,
    run_id: i64,
    what: String,
}

/// Runs the cycle.
pub async fn run(plan: &Plan, args: &CycleArgs, json: bool) -> CmdResult {
    if plan.connectors.is_empty() {
        return Err(Failure::usage(anyhow!("{} configures no connector", plan.source.display())));
    }
    let rules = super::sync::load_rules(plan)?;
    let store = super::open_store(plan).await?;
    let connectors = super::sync::sync_connectors(plan, &store).await?;
    let mut steps: Vec<Step> = Vec::new();
    let mut code = Code::Success;
    // Operator notices of runs that stop, queued and delivered with the cycle's mail.
    let mut notices: Vec<(String, String)> = Vec::new();

    // 1. Import, sources first, then targets.
    for c in &connectors {
        let spec = plan
            .connector(&c.name)
            .ok_or_else(|| Failure::usage(anyhow!("connector `{}` vanished", c.name)))?;
        let mut built = spec.build().map_err(Failure::usage)?;
        let caps = built.connector.capabilities();
        let mode = if args.full || !caps.delta_import { ImportMode::Full } else { ImportMode::Delta };
        let progress = Progress::new(!json, &format!("{mode} of {}", c.name));
        let report = run_import(
            &store,
            built.connector.as_mut(),
            built.kind,
            mode,
            &ImportOptions::default(),
            &SystemClock,
            &progress,
        )
        .await;
        progress.finish();
        let report = report?;
        worst(Code::for_run_status(&report.status), &mut code);
        if Code::for_run_status(&report.status) == Code::Stopped {
            let mut notes = report.notes.clone();
            notes.extend(report.fault.clone());
            notices.push(super::sync::stopped_notice(
                plan,
                &report.profile.to_string(),
                &c.name,
                report.run_id,
                &report.status,
                &notes,
            ));
        }
        let k = &report.counts;
        steps.push(Step {
            step: "import",
            connector: c.name.clone(),
            profile: report.profile.to_string(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "+{} ~{} >{} -{} !{}{}",
                k.adds,
                k.updates,
                k.renames,
                k.deletes,
                k.errors,
                report.fault.as_deref().map(|f| format!("  {f}")).unwrap_or_default()
            ),
        });
    }

    // 2. Sync, sources first, then targets (each import above held the run lock itself; sync
    // and export hold it together).
    let _lock = store.lock_runs()?;
    let mode = if args.full { SyncMode::Full } else { SyncMode::Delta };
    let (hook, set_notes) = super::sync::workflow_hook(plan, &store).await?;
    let options = SyncOptions { error_limit: plan.sync.error_limit, hook, ..SyncOptions::default() };
    let mut sync_runs = Vec::new();
    for c in &connectors {
        let progress = Progress::new(!json, &format!("{mode} of {}", c.name));
        let report = run_sync(&store, &rules, c, &connectors, mode, &options, &SystemClock, &progress).await;
        progress.finish();
        let report = report?;
        worst(Code::for_run_status(&report.status), &mut code);
        sync_runs.push(report.run_id);
        if Code::for_run_status(&report.status) == Code::Stopped {
            notices.push(super::sync::stopped_notice(
                plan,
                &report.profile.to_string(),
                &c.name,
                report.run_id,
                &report.status,
                &report.notes,
            ));
        }
        let k = &report.counts;
        steps.push(Step {
            step: "sync",
            connector: c.name.clone(),
            profile: report.profile.to_string(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "{} read, {} projected, {} joined, {} disconnected; exports staged +{} ~{} -{}; !{}",
                k.processed,
                k.projected,
                k.joined,
                k.disconnected,
                k.export_adds,
                k.export_updates,
                k.export_deletes,
                k.errors
            ),
        });
    }

    let timed = super::sync::time_based_sets(plan, &store).await?;
    let requests =
        store.requests_of_runs(&sync_runs).await? + timed.as_ref().map_or(0, |e| e.requests as i64);

    // 3. Export to every target.
    let export_options = ExportOptions {
        staging: plan.sync.staging,
        threshold: DeletionThreshold {
            count: plan.sync.deletion_threshold,
            percent: plan.sync.deletion_threshold_percent,
        },
        ..ExportOptions::default()
    };
    let mut approve = Vec::new();
    for c in connectors.iter().filter(|c| c.target) {
        let spec = plan
            .connector(&c.name)
            .ok_or_else(|| Failure::usage(anyhow!("connector `{}` vanished", c.name)))?;
        let mut built = spec.build().map_err(Failure::usage)?;
        let report = run_export(&store, built.connector.as_mut(), c, &export_options, &SystemClock).await?;
        worst(Code::for_run_status(&report.status), &mut code);
        if Code::for_run_status(&report.status) == Code::Stopped {
            let mut notes = report.notes.clone();
            if let Some(t) = &report.approval_token {
                notes.push(format!(
                    "{} deletes held: review them with `syncctl export --preview`, release them with `syncctl export --approve-deletes {t}`",
                    report.held_deletes.len()
                ));
            }
            notices.push(super::sync::stopped_notice(
                plan,
                "export",
                &c.name,
                report.run_id,
                &report.status,
                &notes,
            ));
        }
        if let Some(t) = &report.approval_token {
            approve.push(format!(
                "{} deletes held for `{}`: review with `syncctl export --preview`, release with `syncctl export --approve-deletes {t}`",
                report.held_deletes.len(),
                c.name
            ));
        }
        let k = &report.counts;
        steps.push(Step {
            step: "export",
            connector: c.name.clone(),
            profile: "export".into(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "+{} ~{} -{} failed {} held {} retries {}",
                k.adds, k.updates, k.deletes, k.failed, k.held, k.retries
            ),
        });
    }
    // 4. Mail: operator notices, then everything due (set-transition mail included).
    super::mail::queue_operator_notices(plan, &store, &notices).await?;
    match super::mail::deliver_due(plan, &store).await {
        Ok(Some(report)) => {
            let failed = report.retrying() + report.dead_lettered() > 0;
            if failed {
                worst(Code::CompletedWithErrors, &mut code);
            }
            steps.push(Step {
                step: "mail",
                connector: "-".into(),
                profile: "deliver".into(),
                status: if failed { "completed-with-errors".into() } else { "success".into() },
                run_id: 0,
                what: super::mail::summary(&report),
            });
        }
        Ok(None) => {}
        Err(f) => {
            worst(Code::CompletedWithErrors, &mut code);
            steps.push(Step {
                step: "mail",
                connector: "-".into(),
                profile: "deliver".into(),
                status: "not-delivered".into(),
                run_id: 0,
                what: format!("{:#} (the messages stay queued)", f.error),
            });
        }
    }
    let pending = store.pending_exports(None).await?.len();
    let queued = store.mail_list(Some(syncctl_store::MailStatus::Queued), 100_000).await?.len();
    store.close().await;

    let targets = connectors.iter().filter(|c| c.target).count();
    if json {
        let list: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                json!({"step": s.step, "connector": s.connector, "profile": s.profile, "status": s.status,
                       "run_id": s.run_id, "summary": s.what})
            })
            .collect();
        output::print_json(&json!({"steps": list, "pending_exports": pending, "approvals": approve,
                                   "sets": set_notes, "requests": requests, "mail_queued": queued}))?;
    } else {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<7} {:<14} {:<13} {:<36} {:<5} WHAT",
            "STEP", "CONNECTOR", "PROFILE", "STATUS", "RUN"
        );
        for st in &steps {
            let _ = writeln!(
                s,
                "{:<7} {:<14} {:<13} {:<36} {:<5} {}",
                st.step, st.connector, st.profile, st.status, st.run_id, st.what
            );
        }
        if targets == 0 {
            let _ = writeln!(
                s,
                "\nno configured connector takes exports: {pending} pending exports (syncctl export --preview)"
            );
        } else {
            let _ = writeln!(s, "\n{pending} pending exports left (syncctl export --preview)");
        }
        for a in &approve {
            let _ = writeln!(s, "{a}");
        }
        if !plan.workflows.is_empty() {
            for n in &set_notes {
                let _ = writeln!(s, "sets: {n}");
            }
            let _ = writeln!(
                s,
                "{requests} requests made by set transitions (syncctl requests); {queued} messages queued (syncctl mail list)"
            );
        }
        output::print(&s)?;
    }
    Ok(code)
}

/// Keeps the worse of two exit codes.
fn worst(c: Code, code: &mut Code) {
    if c.status() > code.status() {
        *code = c;
    }
}
